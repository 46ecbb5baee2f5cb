// LayerNorm tuning (HF PEFT's LN_TUNING, Zhao et al. 2023): each adapter trains its own
// copy of the targeted norm layers, swapped in while it is active (HF file keys
// "<module>.ln_tuning_layers.weight" / ".bias").
#pragma once

#include "peft/tuner.h"

namespace peft {

struct LNTuningConfig : AdapterConfig {
  static LNTuningConfig from_json(const nlohmann::ordered_json& j, const std::string& where,
                                  std::vector<std::string>* unknown_keys = nullptr);
  std::string peft_type() const override { return "LN_TUNING"; }
  std::unique_ptr<AdapterConfig> clone() const override { return std::make_unique<LNTuningConfig>(*this); }
  nlohmann::ordered_json to_json() const override;
  // Default targets: HF's table by model type (e.g. llama: input_layernorm,
  // post_attention_layernorm, norm).
  void resolve(const Model& model) override;
  std::vector<CopySpec> copies(Model& model) const override;
};

}  // namespace peft
