// DeLoRA (Bini et al. 2025, HF PEFT 0.21's DELORA): decoupled low-rank adaptation. Beside a
// Linear layer W [out, in]:
//   y = x Wᵀ + ((x ⊙ ‖W‖₀) Aᵀ ⊙ s) Bᵀ,  s_i = (λ / r) / (‖A_i‖ ‖B^i‖)
// with ‖W‖₀ the norms of W's input columns (delora_w_norm, fixed at init and filed), A
// [r, in] and B [out, r] whose rows / columns are normalized away, so λ alone bounds the
// update's strength. Init: A kaiming, B zero (or kaiming), λ = delora_lambda.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "peft/tuner.h"

namespace peft {

struct DeloraConfig : AdapterConfig {
  int64_t r = 8;
  double delora_lambda = 15;
  double module_dropout = 0.0;  // dropout on the adapter's input
  std::string bias = "none";    // none, all, delora_only: which biases train
  bool init_weights = true;     // true: B = 0 (the base's output); false: B kaiming too
  std::vector<std::pair<std::string, int64_t>> rank_pattern;   // regex -> r
  std::vector<std::pair<std::string, double>> lambda_pattern;  // regex -> λ

  static DeloraConfig from_json(const nlohmann::ordered_json& j, const std::string& where,
                                std::vector<std::string>* unknown_keys = nullptr);
  std::string peft_type() const override { return "DELORA"; }
  std::unique_ptr<AdapterConfig> clone() const override { return std::make_unique<DeloraConfig>(*this); }
  nlohmann::ordered_json to_json() const override;
  // Null target_modules take HF's table for the model type (LoRA's).
  void resolve(const Model& model) override;
  NamedModules layer_targets(Model& model) const override;
  std::shared_ptr<LayerAdapter> make_layer_adapter(const std::string& path, Module& module,
                                                   at::Generator& gen) const override;
  std::vector<std::string> trained_base_parameters(Model& model, const std::set<std::string>& adapted) const override;
};

class DeloraLayer : public LayerAdapter {
 public:
  // `w_norm_key`: the file key of delora_w_norm (a buffer in HF: filed, never trained or
  // counted as a parameter).
  DeloraLayer(AdaptableLayer* host, int64_t r, double dropout, std::string w_norm_key);
  std::string type_name() const override { return "DeloraLayer"; }
  at::Tensor forward(const at::Tensor& x, const at::Tensor& out) override;
  void merge() override;
  void unmerge() override;
  std::vector<at::Tensor*> trainable_slots() override { return {&A, &B, &lambda}; }
  std::vector<SharedSlot> shared_slots() override { return {{w_norm_key_, &w_norm}}; }
  at::Tensor delta_weight() const;  // [out, in], HF's get_delta_weight

  at::Tensor A, B, lambda, w_norm;  // [r, in], [out, r], [1], [in]
  int64_t r;
  double dropout;

 private:
  at::Tensor scale() const;  // (λ / r) / (‖A_i‖ ‖B^i‖), norms clamped at 1e-4
  std::string w_norm_key_;
};

}  // namespace peft
