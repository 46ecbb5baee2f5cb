// (IA)3 (Liu et al. 2022): learned vectors that rescale keys, values and the input of the
// feed-forward output layer. HF PEFT's IA3Config fields and "ia3_l" tensors.
#pragma once

#include <optional>

#include "peft/tuner.h"

namespace peft {

struct IA3Config : AdapterConfig {
  // Which targets scale their input (feed-forward) rather than their output; HF's rule:
  // a regex full-matches, a list entry is a plain suffix of the module name.
  std::optional<std::vector<std::string>> feedforward_list;
  std::optional<std::string> feedforward_regex;
  bool fan_in_fan_out = false;
  bool init_ia3_weights = true;  // ones (the base model); false: random

  static IA3Config from_json(const nlohmann::ordered_json& j, const std::string& where,
                             std::vector<std::string>* unknown_keys = nullptr);
  std::string peft_type() const override { return "IA3"; }
  std::unique_ptr<AdapterConfig> clone() const override { return std::make_unique<IA3Config>(*this); }
  nlohmann::ordered_json to_json() const override;
  // Null target_modules / feedforward_modules take HF's table for the model type.
  void resolve(const Model& model) override;
  NamedModules layer_targets(Model& model) const override;
  std::shared_ptr<LayerAdapter> make_layer_adapter(const std::string& path, Module& module,
                                                   at::Generator& gen) const override;
  bool is_feedforward(const std::string& module) const;
};

// out = base(x) * l (l: [out, 1]), or for feed-forward layers out = base(x * l) (l: [1, in]).
// Merging scales W's rows (and the bias) or columns.
class IA3Layer : public LayerAdapter {
 public:
  IA3Layer(AdaptableLayer* host, bool feedforward);
  std::string type_name() const override { return "IA3Layer"; }
  at::Tensor transform_input(const at::Tensor& x) override;
  bool transforms_input() const override { return feedforward; }
  at::Tensor forward(const at::Tensor& x, const at::Tensor& out) override;
  void merge() override;
  void unmerge() override;
  std::vector<at::Tensor*> trainable_slots() override { return {&ia3_l}; }

  at::Tensor ia3_l;
  bool feedforward;

 private:
  void scale_host(bool undo);
};

}  // namespace peft
