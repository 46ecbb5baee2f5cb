// BeftLayer: HF PEFT 0.21's beft.Linear (forward, merge into the bias, unmerge).
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <stdexcept>

#include "peft/beft.h"

namespace peft {

BeftLayer::BeftLayer(AdaptableLayer* host) : LayerAdapter(host) {
  const int64_t out = host->output_dim();
  bias = at::zeros({1, out}, at::kFloat);
  register_parameter("beft_bias", &bias, {1, out});
}

at::Tensor BeftLayer::forward(const at::Tensor&, const at::Tensor& out) {
  return (out + bias.flatten()).to(out.scalar_type());
}

void BeftLayer::add_to_host_bias(double sign) {
  at::Tensor* b = host_->bias_tensor();
  if (!b || !b->defined())
    throw std::invalid_argument("cannot merge BEFT: the base layer has no bias (as in HF PEFT)");
  c10::NoGradGuard no_grad;
  b->add_((sign * bias.flatten()).to(b->device(), b->scalar_type()));
}

void BeftLayer::merge() {
  if (merged_) return;
  add_to_host_bias(+1);
  merged_ = true;
}

void BeftLayer::unmerge() {
  if (!merged_) return;
  add_to_host_bias(-1);
  merged_ = false;
}

}  // namespace peft
