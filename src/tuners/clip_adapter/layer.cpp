#include <ATen/ATen.h>

#include "peft/clip_adapter.h"
#include "peft/layers.h"

namespace peft {

ClipAdapterLayer::ClipAdapterLayer(AdaptableLayer* host, int64_t hidden, double alpha)
    : LayerAdapter(host), alpha_(alpha) {
  const int64_t d = host->output_dim();
  clip_adapter_down = at::zeros({hidden, d}, at::kFloat);
  clip_adapter_up = at::zeros({d, hidden}, at::kFloat);
  register_parameter("clip_adapter_down", &clip_adapter_down, {hidden, d});
  register_parameter("clip_adapter_up", &clip_adapter_up, {d, hidden});
}

at::Tensor ClipAdapterLayer::forward(const at::Tensor&, const at::Tensor& f) {
  const auto dt = f.scalar_type();
  const auto adapted = at::relu(at::linear(at::relu(at::linear(f, clip_adapter_down.to(dt))), clip_adapter_up.to(dt)));
  return alpha_ * adapted + (1.0 - alpha_) * f;
}

void ClipAdapterLayer::merge() {
  throw std::logic_error("CLIP_ADAPTER cannot be merged: its MLP is not linear (keep the adapter loaded)");
}

}  // namespace peft
