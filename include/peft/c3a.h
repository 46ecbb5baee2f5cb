// C3A (Chen et al. 2024, HF PEFT 0.21's C3A): circular convolution adaptation. A Linear
// layer's weight change is block-circulant: with b = block_size, m = out / b, n = in / b,
// the trainable c3a_kernel [m, n, b] holds one length-b vector per block, and
//   y += bcc(x, kernel) / in,  bcc(x)_m = Re(fft( sum_n ifft(x_n) * fft(kernel_mn) ))
// over the b-wide chunks x_n of the input (HF's BlockCircularConvolution), always in fp32.
// dW [out, in] = bcc(I_in)^T / in (HF's get_circulant_fast), which merge adds.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "peft/tuner.h"

namespace peft {

struct C3AConfig : AdapterConfig {
  int64_t block_size = 256;  // must divide in_features and out_features of every target
  // HF's block_size_pattern, in the file's order: the first key k with re.match(".*\.k$")
  // on a module's name (else the name itself as a key) gives that module's block size.
  std::vector<std::pair<std::string, int64_t>> block_size_pattern;
  // HF's bool-or-string field, the booleans spelled "true" / "false" (as LoRA's
  // init_lora_weights): "true": zeros (the base model); "false" or "xavier_uniform" (HF's
  // default): U(-a, a), a = sqrt(6 / (in + out)); "kaiming_uniform": U(-1/sqrt(in),
  // 1/sqrt(in)); "gaussian": N(0, 1).
  std::string init_weights = "xavier_uniform";
  std::string bias = "none";  // none, all, c3a_only: which biases train

  static C3AConfig from_json(const nlohmann::ordered_json& j, const std::string& where,
                             std::vector<std::string>* unknown_keys = nullptr);
  std::string peft_type() const override { return "C3A"; }
  std::unique_ptr<AdapterConfig> clone() const override { return std::make_unique<C3AConfig>(*this); }
  nlohmann::ordered_json to_json() const override;
  // Null target_modules take HF's table for the model type (LoRA's; GPT-2: mlp.c_proj).
  void resolve(const Model& model) override;
  NamedModules layer_targets(Model& model) const override;
  std::shared_ptr<LayerAdapter> make_layer_adapter(const std::string& path, Module& module,
                                                   at::Generator& gen) const override;
  std::vector<std::string> trained_base_parameters(Model& model, const std::set<std::string>& adapted) const override;
  int64_t block_size_for(const std::string& path) const;
};

// HF's BlockCircularConvolution forward on fp32 `x` [..., n * b] and `kernel` [m, n, b]:
// [..., m * b] (not yet divided by in). Differentiable through ATen's FFTs.
at::Tensor block_circular_convolution(const at::Tensor& x, const at::Tensor& kernel);

class C3ALayer : public LayerAdapter {
 public:
  C3ALayer(AdaptableLayer* host, int64_t block_size);
  std::string type_name() const override { return "C3ALayer"; }
  at::Tensor forward(const at::Tensor& x, const at::Tensor& out) override;
  void merge() override;
  void unmerge() override;
  std::vector<at::Tensor*> trainable_slots() override { return {&kernel}; }
  at::Tensor delta_weight() const;  // [out, in], fp32 (HF's get_delta_weight)

  at::Tensor kernel;  // c3a_kernel [out / b, in / b, b]
  int64_t block_size;
};

}  // namespace peft
