// Tuning a few existing parameters instead of adding new ones: each adapter trains its own
// copy of them, swapped in while it is active.
//  - LayerNorm tuning (HF PEFT's LN_TUNING, Zhao et al. 2023): the targeted norm layers
//    (HF file keys "<module>.ln_tuning_layers.weight"/".bias").
//  - BitFit (Ben Zaken et al. 2022): bias terms only, of all modules or the targeted ones.
//    HF PEFT has no BitFit; ours saves "<module>.bias" (docs/TUNERS.md).
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

struct BitFitConfig : AdapterConfig {
  static BitFitConfig from_json(const nlohmann::ordered_json& j, const std::string& where,
                                std::vector<std::string>* unknown_keys = nullptr);
  std::string peft_type() const override { return "BITFIT"; }
  std::unique_ptr<AdapterConfig> clone() const override { return std::make_unique<BitFitConfig>(*this); }
  nlohmann::ordered_json to_json() const override;
  // No target_modules: every bias of the model outside modules_to_save (the output head
  // included, as the paper trains all biases).
  std::vector<CopySpec> copies(Model& model) const override;
};

}  // namespace peft
