// Building blocks with transformers' parameter names and arithmetic.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>

#include "peft/adaptable.h"
#include "peft/module.h"

namespace peft {

namespace quant {
struct Weight4bit;
}

// y = x W^T + b, weight [out, in] as nn.Linear stores it.
class Linear : public AdaptableLayer {
 public:
  Linear(int64_t in_features, int64_t out_features, bool bias);
  std::string type_name() const override { return weight_4bit ? "Linear4bit" : "Linear"; }
  LayerKind kind() const override { return LayerKind::kLinear; }
  at::Tensor* weight_tensor() override { return &weight; }
  at::Tensor* bias_tensor() override { return bias.defined() ? &bias : nullptr; }
  at::Tensor dense_weight() override;
  void assign_weight(const at::Tensor& w) override;
  bool weight_quantized() const override { return weight_4bit != nullptr; }
  at::Tensor base_forward(const at::Tensor& x) override;
  int64_t input_dim() const override { return in_features; }
  int64_t output_dim() const override { return out_features; }
  int64_t in_features, out_features;
  at::Tensor weight, bias;
  // Set where the weight is stored 4-bit (QLoRA): `weight` then holds the packed codes,
  // uint8 [out * in / 2, 1], exactly as bitsandbytes' Params4bit does.
  std::shared_ptr<const quant::Weight4bit> weight_4bit;
  // Largest |value assigned - value stored| of the last assign_weight on a 4-bit weight
  // (a merge requantizes: this is the error it added).
  double requantization_error = 0.0;
};

// GPT-2's Conv1D: a linear layer whose weight is stored transposed, [in, out].
class Conv1D : public AdaptableLayer {
 public:
  Conv1D(int64_t in_features, int64_t out_features);
  std::string type_name() const override { return "Conv1D"; }
  LayerKind kind() const override { return LayerKind::kLinear; }
  at::Tensor* weight_tensor() override { return &weight; }
  at::Tensor* bias_tensor() override { return bias.defined() ? &bias : nullptr; }
  bool weight_is_in_out() const override { return true; }
  at::Tensor base_forward(const at::Tensor& x) override;
  int64_t input_dim() const override { return in_features; }
  int64_t output_dim() const override { return out_features; }
  int64_t in_features, out_features;
  at::Tensor weight, bias;
};

class Embedding : public AdaptableLayer {
 public:
  Embedding(int64_t num_embeddings, int64_t embedding_dim);
  std::string type_name() const override { return "Embedding"; }
  LayerKind kind() const override { return LayerKind::kEmbedding; }
  at::Tensor* weight_tensor() override { return &weight; }
  bool weight_is_in_out() const override { return true; }
  at::Tensor base_forward(const at::Tensor& ids) override { return forward_with_weight(ids, weight); }
  at::Tensor forward_with_weight(const at::Tensor& ids, const at::Tensor& table) override;
  int64_t input_dim() const override { return num_embeddings; }
  int64_t output_dim() const override { return embedding_dim; }
  int64_t num_embeddings, embedding_dim;
  at::Tensor weight;
};

class LayerNorm : public AdaptableLayer {
 public:
  // `bias` false: no bias parameter (ModernBERT's norm_bias), as nn.LayerNorm(bias=False).
  LayerNorm(int64_t dim, double eps, bool bias = true);
  std::string type_name() const override { return "LayerNorm"; }
  LayerKind kind() const override { return LayerKind::kNorm; }
  at::Tensor* weight_tensor() override { return weight.defined() ? &weight : nullptr; }
  at::Tensor* bias_tensor() override { return bias.defined() ? &bias : nullptr; }
  at::Tensor base_forward(const at::Tensor& x) override;
  int64_t input_dim() const override { return dim; }
  int64_t output_dim() const override { return dim; }
  int64_t dim;
  double eps;
  at::Tensor weight, bias;
};

// LLaMA's RMSNorm: normalizes in fp32, scales in the input dtype.
class RMSNorm : public AdaptableLayer {
 public:
  RMSNorm(int64_t dim, double eps, std::string type = "LlamaRMSNorm");
  std::string type_name() const override { return type_; }
  LayerKind kind() const override { return LayerKind::kNorm; }
  at::Tensor* weight_tensor() override { return &weight; }
  at::Tensor base_forward(const at::Tensor& x) override;
  int64_t input_dim() const override { return dim; }
  int64_t output_dim() const override { return dim; }
  int64_t dim;
  double eps;
  at::Tensor weight;

 private:
  std::string type_;
};

// Patch embedding of ViT: Conv2d with kernel = stride = patch size.
class Conv2d : public Module {
 public:
  Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel, int64_t stride);
  std::string type_name() const override { return "Conv2d"; }
  at::Tensor forward(const at::Tensor& x);
  int64_t stride;
  at::Tensor weight, bias;
};

// Activations by transformers' ACT2FN names ("gelu", "gelu_new", "silu", "relu", ...).
at::Tensor activation(const std::string& name, const at::Tensor& x);

}  // namespace peft
