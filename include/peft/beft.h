// BEFT (HF PEFT 0.21's BEFT, arXiv 2509.15974): bias-efficient fine-tuning. Each targeted
// Linear layer gets one trained vector added to its output, y = x Wᵀ + b + β, β
// ("beft_bias" [1, out]) starting at zero; by default only the value projections
// (HF's own target table). Merging adds β to the layer's bias, so a layer without a bias
// cannot merge (as in HF).
#pragma once

#include <memory>
#include <string>

#include "peft/tuner.h"

namespace peft {

struct BeftConfig : AdapterConfig {
  bool init_weights = true;  // true: β = 0; false: N(0, 1) (HF discourages it)

  static BeftConfig from_json(const nlohmann::ordered_json& j, const std::string& where,
                              std::vector<std::string>* unknown_keys = nullptr);
  std::string peft_type() const override { return "BEFT"; }
  std::unique_ptr<AdapterConfig> clone() const override { return std::make_unique<BeftConfig>(*this); }
  nlohmann::ordered_json to_json() const override;
  // Null target_modules take HF's BEFT table (the value projections) for the model type.
  void resolve(const Model& model) override;
  NamedModules layer_targets(Model& model) const override;
  std::shared_ptr<LayerAdapter> make_layer_adapter(const std::string& path, Module& module,
                                                   at::Generator& gen) const override;
};

class BeftLayer : public LayerAdapter {
 public:
  explicit BeftLayer(AdaptableLayer* host);
  std::string type_name() const override { return "BeftLayer"; }
  at::Tensor forward(const at::Tensor& x, const at::Tensor& out) override;
  void merge() override;
  void unmerge() override;
  std::vector<at::Tensor*> trainable_slots() override { return {&bias}; }

  at::Tensor bias;  // beft_bias [1, out]

 private:
  void add_to_host_bias(double sign);
};

}  // namespace peft
