// SSF (Lian et al. 2022, "Scaling & Shifting Your Features"): a learned per-feature scale
// and shift after each targeted layer, y = layer(x) * scale + shift. It folds into the
// layer's own weight and bias, so a merged model costs nothing extra at inference.
// HF PEFT has no SSF; our file format follows its style (docs/TUNERS.md).
#pragma once

#include "peft/tuner.h"

namespace peft {

struct SSFConfig : AdapterConfig {
  // true: scale = 1, shift = 0, so training starts at the base model. false: the paper's
  // N(1, 0.02) / N(0, 0.02).
  bool init_weights = true;

  static SSFConfig from_json(const nlohmann::ordered_json& j, const std::string& where,
                             std::vector<std::string>* unknown_keys = nullptr);
  std::string peft_type() const override { return "SSF"; }
  std::unique_ptr<AdapterConfig> clone() const override { return std::make_unique<SSFConfig>(*this); }
  nlohmann::ordered_json to_json() const override;
  // Default (no target_modules): every Linear/Conv1D but the output head, and every norm.
  NamedModules layer_targets(Model& model) const override;
  std::shared_ptr<LayerAdapter> make_layer_adapter(const std::string& path, Module& module,
                                                   at::Generator& gen) const override;
};

class SSFLayer : public LayerAdapter {
 public:
  SSFLayer(AdaptableLayer* host, std::string path);
  std::string type_name() const override { return "SSFLayer"; }
  at::Tensor forward(const at::Tensor& x, const at::Tensor& out) override;
  // Linear / Conv1D: W' = diag(scale) W, b' = scale * b + shift; norms: their affine
  // weight and bias likewise; embeddings: every row. A layer without a bias can take the
  // scale only, so merging a non-zero shift there is an error.
  void merge() override;
  void unmerge() override;
  std::vector<at::Tensor*> trainable_slots() override { return {&ssf_scale, &ssf_shift}; }

  at::Tensor ssf_scale, ssf_shift;  // [out]

 private:
  void fold(bool undo);
  std::string path_;
};

}  // namespace peft
