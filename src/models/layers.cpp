#include "peft/layers.h"

#include "models/few_row_linear.h"
#include "models/fused_ops.h"
#include "models/model_config.h"
#include "quant/linear_4bit.h"

#include <ATen/ATen.h>

#include <stdexcept>

namespace peft {

Linear::Linear(int64_t in, int64_t out, bool has_bias) : in_features(in), out_features(out) {
  register_parameter("weight", &weight, {out, in});
  if (has_bias) register_parameter("bias", &bias, {out});
}

at::Tensor Linear::base_forward(const at::Tensor& x) {
  if (weight_4bit) return quant::linear_4bit(x, weight, weight_4bit, bias);
  if (at::Tensor y = few_row_linear(x, weight, bias); y.defined()) return y;
  return at::linear(x, weight, bias);
}

at::Tensor Linear::dense_weight() {
  if (!weight_4bit) return weight;
  return quant::dequantize_weight(weight, *weight_4bit, weight_4bit->state.dtype);
}

void Linear::assign_weight(const at::Tensor& w) {
  if (!weight_4bit) return AdaptableLayer::assign_weight(w);
  const auto& old = weight_4bit->state;
  auto q = quant::quantize_4bit(w.to(old.dtype).contiguous(), old.type, old.blocksize, old.nested);
  weight = q.packed.to(weight.device());
  weight_4bit = std::make_shared<const quant::Weight4bit>(std::move(q.state), weight_4bit->compute_dtype);
  requantization_error = (dense_weight().to(at::kFloat) - w.to(at::kFloat)).abs().max().item<double>();
}

Conv1D::Conv1D(int64_t in, int64_t out) : in_features(in), out_features(out) {
  register_parameter("weight", &weight, {in, out});
  register_parameter("bias", &bias, {out});
}

at::Tensor Conv1D::base_forward(const at::Tensor& x) {
  if (at::Tensor y = few_row_linear(x, weight, bias, /*weight_in_out=*/true); y.defined()) return y;
  auto sizes = x.sizes().vec();
  sizes.back() = out_features;
  return at::addmm(bias, x.reshape({-1, in_features}), weight).view(sizes);
}

Embedding::Embedding(int64_t n, int64_t d) : num_embeddings(n), embedding_dim(d) {
  register_parameter("weight", &weight, {n, d});
}

at::Tensor Embedding::forward_with_weight(const at::Tensor& ids, const at::Tensor& table) {
  at::Tensor out = at::embedding(table, ids);
  return compute_dtype && *compute_dtype != out.scalar_type() ? out.to(*compute_dtype) : out;
}

LayerNorm::LayerNorm(int64_t d, double e, bool with_bias) : dim(d), eps(e) {
  register_parameter("weight", &weight, {d});
  if (with_bias) register_parameter("bias", &bias, {d});
}

at::Tensor LayerNorm::base_forward(const at::Tensor& x) { return at::layer_norm(x, {dim}, weight, bias, eps); }

RMSNorm::RMSNorm(int64_t d, double e, std::string type) : dim(d), eps(e), type_(std::move(type)) {
  register_parameter("weight", &weight, {d});
}

at::Tensor RMSNorm::base_forward(const at::Tensor& x) {
  // Under bf16 autocast the output only feeds products that would cast it to bf16: one
  // fused pass writes it so (the weight frozen, no adapter on the norm to see its dtype).
  if (fused::bf16_autocast_cpu(x) && x.scalar_type() == at::kFloat && !weight.requires_grad() &&
      adapter_names().empty())
    return fused::rms_norm_bf16(x, weight, eps);
  // Otherwise ATen's own composition, op for op as transformers: a fused fp32 kernel's
  // different rounding of the row sums, over 30 layers, moved SmolLM2's logits 1e-4 away
  // from transformers'.
  return fused::rms_norm_aten(x, weight, eps);
}

Conv2d::Conv2d(int64_t in, int64_t out, int64_t kernel, int64_t s) : stride(s) {
  register_parameter("weight", &weight, {out, in, kernel, kernel});
  register_parameter("bias", &bias, {out});
}

at::Tensor Conv2d::forward(const at::Tensor& x) { return at::conv2d(x, weight, bias, {stride, stride}); }


at::Tensor activation(const std::string& name, const at::Tensor& x) {
  if (name == "gelu") return at::gelu(x);
  if (name == "gelu_new" || name == "gelu_pytorch_tanh" || name == "gelu_fast") return at::gelu(x, "tanh");
  if (name == "silu" || name == "swish") return at::silu(x);
  if (name == "relu") return at::relu(x);
  if (name == "tanh") return at::tanh(x);
  if (name == "quick_gelu") return x * at::sigmoid(1.702 * x);  // CLIP: transformers' QuickGELUActivation
  check_activation(name);
  return x;
}

}  // namespace peft
