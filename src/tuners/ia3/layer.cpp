#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include "peft/ia3.h"
#include "peft/layers.h"

namespace peft {

IA3Layer::IA3Layer(AdaptableLayer* host, bool ff) : LayerAdapter(host), feedforward(ff) {
  // HF's shapes: [1, in] for feed-forward layers, [out, 1] otherwise.
  std::vector<int64_t> shape = ff ? std::vector<int64_t>{1, host->input_dim()} : std::vector<int64_t>{host->output_dim(), 1};
  ia3_l = at::ones(shape, at::kFloat);
  register_parameter("ia3_l", &ia3_l, shape);
}

at::Tensor IA3Layer::transform_input(const at::Tensor& x) {
  return feedforward ? x * ia3_l.flatten().to(x.scalar_type()) : x;
}

at::Tensor IA3Layer::forward(const at::Tensor&, const at::Tensor& out) {
  return feedforward ? out : out * ia3_l.flatten().to(out.scalar_type());
}

void IA3Layer::scale_host(bool undo) {
  c10::NoGradGuard g;
  const at::Tensor w = host_->dense_weight();
  at::Tensor* b = host_->bias_tensor();
  const bool transposed = host_->weight_is_in_out();
  auto l = ia3_l.flatten().to(w.scalar_type());
  // Rows of W [out, in] scale outputs, columns scale inputs.
  const bool along_out = !feedforward;
  auto shaped = (along_out != transposed) ? l.unsqueeze(1) : l.unsqueeze(0);
  host_->assign_weight(undo ? w / shaped : w * shaped);
  if (!feedforward && b) undo ? b->div_(l) : b->mul_(l);
}

void IA3Layer::merge() {
  if (merged_) return;
  scale_host(false);
  merged_ = true;
}

void IA3Layer::unmerge() {
  if (!merged_) return;
  scale_host(true);
  merged_ = false;
}

}  // namespace peft
