#include <ATen/ATen.h>

#include "peft/bottleneck.h"
#include "peft/layers.h"

namespace peft {

BottleneckAdapter::BottleneckAdapter(AdaptableLayer* host, int64_t m, bool par, std::string activation_name, double s)
    : LayerAdapter(host), parallel(par), act(std::move(activation_name)), scaling(s) {
  const int64_t d = par ? host->input_dim() : host->output_dim();
  down_w = at::zeros({m, d}, at::kFloat);
  down_b = at::zeros({m}, at::kFloat);
  up_w = at::zeros({d, m}, at::kFloat);
  up_b = at::zeros({d}, at::kFloat);
  register_parameter("adapter_down.weight", &down_w, {m, d});
  register_parameter("adapter_down.bias", &down_b, {m});
  register_parameter("adapter_up.weight", &up_w, {d, m});
  register_parameter("adapter_up.bias", &up_b, {d});
}

at::Tensor BottleneckAdapter::forward(const at::Tensor& x, const at::Tensor& out) {
  const auto& in = parallel ? x : out;
  const auto dt = in.scalar_type();
  auto h = activation(act, at::linear(in, down_w.to(dt), down_b.to(dt)));
  return out + at::linear(h, up_w.to(dt), up_b.to(dt)) * scaling;
}

void BottleneckAdapter::merge() {
  throw std::logic_error("bottleneck adapters are non-linear and cannot be merged into the weights");
}

}  // namespace peft
