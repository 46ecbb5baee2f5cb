#include "tuners/lora/svd_lowrank.h"

#include <ATen/ATen.h>

#include <utility>

namespace peft {

std::tuple<at::Tensor, at::Tensor, at::Tensor> svd_lowrank(at::Tensor a, int64_t q, int64_t niter,
                                                           at::Generator& gen) {
  const bool wide = a.size(0) < a.size(1);
  if (wide) a = a.t();  // torch assumes a tall matrix
  auto qr_q = [](const at::Tensor& x) { return std::get<0>(at::linalg_qr(x)); };
  auto Q = qr_q(at::matmul(a, at::randn({a.size(1), q}, gen, a.options())));
  for (int64_t i = 0; i < niter; ++i) {
    Q = qr_q(at::matmul(a.t(), Q));
    Q = qr_q(at::matmul(a, Q));
  }
  auto [U, S, Vh] = at::linalg_svd(at::matmul(Q.t(), a), /*full_matrices=*/false);
  at::Tensor u = Q.matmul(U), v = Vh.t();
  if (wide) std::swap(u, v);
  return {u, S, v};
}

}  // namespace peft
