#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include "peft/layers.h"
#include "peft/ssf.h"

namespace peft {

SSFLayer::SSFLayer(AdaptableLayer* host, std::string path) : LayerAdapter(host), path_(std::move(path)) {
  const int64_t d = host->output_dim();
  ssf_scale = at::ones({d}, at::kFloat);
  ssf_shift = at::zeros({d}, at::kFloat);
  register_parameter("ssf_scale", &ssf_scale, {d});
  register_parameter("ssf_shift", &ssf_shift, {d});
}

at::Tensor SSFLayer::forward(const at::Tensor&, const at::Tensor& out) {
  return out * ssf_scale.to(out.scalar_type()) + ssf_shift.to(out.scalar_type());
}

void SSFLayer::fold(bool undo) {
  c10::NoGradGuard g;
  at::Tensor w = host_->dense_weight();
  at::Tensor* b = host_->bias_tensor();
  if (!w.defined()) throw std::logic_error("SSF on '" + path_ + "' (" + host_->type_name() + ") cannot be merged");
  // The scale shaped for the weight: per row of [out, in], per column of [in, out].
  const at::Tensor scale_w = w.dim() == 1             ? ssf_scale
                             : host_->weight_is_in_out() ? ssf_scale.unsqueeze(0)
                                                         : ssf_scale.unsqueeze(1);
  const bool embedding = host_->kind() == LayerKind::kEmbedding;  // its shift goes into the table
  const bool has_bias = b != nullptr;
  if (!has_bias && !embedding && ssf_shift.abs().max().item<double>() != 0.0)
    throw std::logic_error("SSF shift on '" + path_ + "' cannot be merged: the " + host_->type_name() +
                           " has no bias");
  auto sw = scale_w.to(w.scalar_type());
  if (!undo) {
    w = w * sw;
    if (embedding) w = w + ssf_shift.to(w.scalar_type());
    if (has_bias) b->mul_(ssf_scale.to(b->scalar_type())).add_(ssf_shift.to(b->scalar_type()));
  } else {
    if (embedding) w = w - ssf_shift.to(w.scalar_type());
    w = w / sw;
    if (has_bias) b->sub_(ssf_shift.to(b->scalar_type())).div_(ssf_scale.to(b->scalar_type()));
  }
  host_->assign_weight(w);
}

void SSFLayer::merge() {
  if (merged_) return;
  fold(false);
  merged_ = true;
}

void SSFLayer::unmerge() {
  if (!merged_) return;
  fold(true);
  merged_ = false;
}

}  // namespace peft
