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
  at::Tensor *w = nullptr, *b = nullptr;
  at::Tensor scale_w = ssf_scale;  // the scale shaped for the weight
  if (auto* l = dynamic_cast<Linear*>(host_)) w = &l->weight, b = &l->bias, scale_w = ssf_scale.unsqueeze(1);
  else if (auto* c = dynamic_cast<Conv1D*>(host_)) w = &c->weight, b = &c->bias, scale_w = ssf_scale.unsqueeze(0);
  else if (auto* n = dynamic_cast<LayerNorm*>(host_)) w = &n->weight, b = &n->bias;
  else if (auto* r = dynamic_cast<RMSNorm*>(host_)) w = &r->weight;
  else if (auto* e = dynamic_cast<Embedding*>(host_)) w = &e->weight, scale_w = ssf_scale.unsqueeze(0);
  else throw std::logic_error("SSF on '" + path_ + "' (" + host_->type_name() + ") cannot be merged");
  const bool embedding = dynamic_cast<Embedding*>(host_) != nullptr;
  const bool has_bias = b && b->defined();
  if (!has_bias && !embedding && ssf_shift.abs().max().item<double>() != 0.0)
    throw std::logic_error("SSF shift on '" + path_ + "' cannot be merged: the " + host_->type_name() +
                           " has no bias");
  auto sw = scale_w.to(w->scalar_type());
  if (!undo) {
    w->mul_(sw);
    if (embedding) w->add_(ssf_shift.to(w->scalar_type()));
    if (has_bias) b->mul_(ssf_scale.to(b->scalar_type())).add_(ssf_shift.to(b->scalar_type()));
  } else {
    if (embedding) w->sub_(ssf_shift.to(w->scalar_type()));
    w->div_(sw);
    if (has_bias) b->sub_(ssf_shift.to(b->scalar_type())).div_(ssf_scale.to(b->scalar_type()));
  }
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
