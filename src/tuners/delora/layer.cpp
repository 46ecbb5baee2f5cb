// DeloraLayer: HF PEFT 0.21's DeloraLinear (forward, get_delta_weight, merge, unmerge).
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include "peft/delora.h"
#include "tuners/delta_merge.h"

namespace peft {

DeloraLayer::DeloraLayer(AdaptableLayer* host, int64_t r_, double dropout_, std::string w_norm_key)
    : LayerAdapter(host), r(r_), dropout(dropout_), w_norm_key_(std::move(w_norm_key)) {
  const int64_t in = host->input_dim(), out = host->output_dim();
  A = at::zeros({r, in}, at::kFloat);
  B = at::zeros({out, r}, at::kFloat);
  lambda = at::zeros({1}, at::kFloat);
  w_norm = at::ones({in}, at::kFloat);
  register_parameter("delora_A", &A, {r, in});
  register_parameter("delora_B", &B, {out, r});
  register_parameter("delora_lambda", &lambda, {1});
}

at::Tensor DeloraLayer::scale() const {
  const auto An = A.norm(2, {1}).clamp_min(1e-4), Bn = B.norm(2, {0}).clamp_min(1e-4);
  return (lambda / static_cast<double>(r)) / (An * Bn);
}

at::Tensor DeloraLayer::forward(const at::Tensor& x, const at::Tensor& out) {
  const auto xd = training && dropout > 0 ? at::dropout(x, dropout, true) : x;
  const auto dt = x.scalar_type();
  auto h = at::linear(xd * w_norm.to(dt), A.to(dt));
  h = at::linear(h * scale().to(dt), B.to(dt));
  return out + h.to(out.scalar_type());
}

at::Tensor DeloraLayer::delta_weight() const {
  return at::mm(B * scale().unsqueeze(0), A) * w_norm.unsqueeze(0);  // B diag(s) A, columns times ‖W‖₀
}

void DeloraLayer::merge() {
  if (merged_) return;
  c10::NoGradGuard g;
  add_delta_to_host(*host_, delta_weight(), +1);
  merged_ = true;
}

void DeloraLayer::unmerge() {
  if (!merged_) return;
  c10::NoGradGuard g;
  add_delta_to_host(*host_, delta_weight(), -1);
  merged_ = false;
}

}  // namespace peft
