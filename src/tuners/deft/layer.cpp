// DeftLayer: HF PEFT 0.21's DeftLinear (forward, get_delta_weight, merge, unmerge).
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include "peft/deft.h"
#include "tuners/delta_merge.h"

namespace peft {

DeftLayer::DeftLayer(AdaptableLayer* host, int64_t r_, double scaling_, bool qr_, bool para_, double dropout_)
    : LayerAdapter(host), r(r_), scaling(scaling_), dropout(dropout_), qr(qr_), para(para_) {
  const int64_t in = host->input_dim(), out = host->output_dim();
  P = at::zeros({out, r}, at::kFloat);
  register_parameter("deft_P", &P, {out, r});
  if (!para) {
    R = at::zeros({r, in}, at::kFloat);
    register_parameter("deft_R", &R, {r, in});
  }
}

std::vector<at::Tensor*> DeftLayer::trainable_slots() {
  if (para) return {&P};
  return {&P, &R};
}

std::pair<at::Tensor, at::Tensor> DeftLayer::project() const {
  const auto p = P.to(at::kFloat);
  if (!qr) return {p, at::relu(p)};
  auto q = std::get<0>(at::linalg_qr(p));
  return {q, q};
}

at::Tensor DeftLayer::merge_factor() const {
  at::Tensor w = host_->dense_weight().to(at::kFloat);
  if (host_->weight_is_in_out()) w = w.t();
  return at::matmul(project().second.t(), w.to(P.device()));
}

at::Tensor DeftLayer::delta_from_factor(const at::Tensor& factor) const {
  const auto q = project().first;
  if (para) return -at::matmul(q, factor);
  return at::matmul(q, R.to(at::kFloat) * scaling - factor);
}

// HF subtracts (x Wᵀ) right Qᵀ from the base output; x Wᵀ right = x (rightᵀ W)ᵀ, so the
// projection is taken on the rank-r factor instead of recomputing the base product.
at::Tensor DeftLayer::forward(const at::Tensor& x, const at::Tensor& out) {
  const auto x32 = x.to(at::kFloat);
  const auto [q, right] = project();
  at::Tensor w = host_->dense_weight().to(at::kFloat);
  if (host_->weight_is_in_out()) w = w.t();
  auto h = -at::linear(x32, at::matmul(right.t(), w));
  if (!para) {
    const auto xd = training && dropout > 0 ? at::dropout(x32, dropout, true) : x32;
    h = h + at::linear(xd, R.to(at::kFloat) * scaling);
  }
  return (out.to(at::kFloat) + at::linear(h, q)).to(out.scalar_type());
}

void DeftLayer::merge() {
  if (merged_) return;
  c10::NoGradGuard g;
  merged_factor_ = merge_factor();
  add_delta_to_host(*host_, delta_from_factor(merged_factor_), +1);
  merged_ = true;
}

void DeftLayer::unmerge() {
  if (!merged_) return;
  c10::NoGradGuard g;
  add_delta_to_host(*host_, delta_from_factor(merged_factor_), -1);
  merged_factor_ = at::Tensor();
  merged_ = false;
}

}  // namespace peft
