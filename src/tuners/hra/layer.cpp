// HRALayer: HF PEFT 0.21's HRALinear (reflections, forward, merge, unmerge).
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include "peft/hra.h"
#include "tuners/delta_merge.h"

namespace peft {

HRALayer::HRALayer(AdaptableLayer* host, int64_t r, bool apply_GS_) : LayerAdapter(host), apply_GS(apply_GS_) {
  const int64_t in = host->input_dim();
  u = at::zeros({in, r}, at::kFloat);
  register_parameter("hra_u", &u, {in, r});
}

at::Tensor HRALayer::reflections(bool reverse) const {
  const int64_t in = u.size(0), r = u.size(1);
  const auto U = u.to(at::kFloat);
  const auto eye = at::eye(in, U.options());
  if (apply_GS) {
    // Gram-Schmidt over the columns; H = I - 2 U U^T is its own inverse (reverse is moot, as in HF).
    std::vector<at::Tensor> cols{(U.select(1, 0) / U.select(1, 0).norm()).view({-1, 1})};
    for (int64_t i = 1; i < r; ++i) {
      auto ui = U.select(1, i).view({-1, 1});
      for (int64_t j = 0; j < i; ++j) ui = ui - at::mm(cols[j].t(), ui) * cols[j];
      cols.push_back((ui / ui.norm()).view({-1, 1}));
    }
    const auto Q = at::cat(cols, 1);
    return eye - 2 * at::mm(Q, Q.t());
  }
  const auto n = U / U.norm(2, {0});
  at::Tensor H = eye;
  for (int64_t k = 0; k < r; ++k) {
    const auto ui = n.select(1, reverse ? r - 1 - k : k).view({-1, 1});
    H = H - 2 * at::mm(at::mm(H, ui), ui.t());
  }
  return H;
}

at::Tensor HRALayer::transform_input(const at::Tensor& x) {
  // F.linear(x, W H) = (x H^T) W^T: the reflections act on the input, the layer stays frozen.
  const auto H = reflections(false);
  return at::linear(x.to(H.scalar_type()), H).to(x.scalar_type());
}

void HRALayer::merge() {
  if (merged_) return;
  c10::NoGradGuard g;
  const auto H = reflections(false);
  const auto w = host_->dense_weight().to(H.device(), at::kFloat);
  add_delta_to_host(*host_, at::mm(w, H) - w, +1);  // W <- W H
  merged_ = true;
}

void HRALayer::unmerge() {
  if (!merged_) return;
  c10::NoGradGuard g;
  const auto H = reflections(true);
  const auto w = host_->dense_weight().to(H.device(), at::kFloat);
  add_delta_to_host(*host_, at::mm(w, H) - w, +1);  // W <- W H^-1
  merged_ = false;
}

}  // namespace peft
