// scikit-learn's KMeans as ADAMSS's clustering_Z calls it, reproduced label for label.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace peft {

// scikit-learn 1.x's KMeans(n_clusters=k, init="random", n_init=1, max_iter, random_state=seed)
// .fit_predict(x) on float32 rows x [n, d]: numpy's MT19937 choice of the initial centers,
// Lloyd's iterations on centered data with empty-cluster relocation, sklearn's tolerance.
// Distances are computed in double (sklearn: float32 GEMM), which only matters at exact ties.
std::vector<int64_t> sklearn_kmeans_random(const at::Tensor& x, int64_t k, int64_t max_iter, uint32_t seed);

}  // namespace peft
