// torch.svd_lowrank, for the inits that use it (fast PiSSA, LoRA-GA, EVA's incremental PCA).
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <tuple>

namespace peft {

// torch.svd_lowrank(a, q, niter) (Halko et al. 2009, algorithm 5.1, as torch/_lowrank.py):
// a basis of a's range from a Gaussian sketch (drawn from `gen` in a's dtype) refined by
// niter power iterations, then the SVD of the projection. Returns U [m, q], S [q], V [n, q]
// (fewer than q columns where a has fewer rows or columns).
std::tuple<at::Tensor, at::Tensor, at::Tensor> svd_lowrank(at::Tensor a, int64_t q, int64_t niter, at::Generator& gen);

}  // namespace peft
