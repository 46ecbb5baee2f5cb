// BitFit (Ben Zaken et al. 2022): only bias terms train, of all modules or the targeted
// ones; each adapter trains its own copy of them, swapped in while it is active. HF PEFT
// has no BitFit; ours saves "base_model.model.<module>.bias" (docs/TUNERS.md).
#pragma once

#include "peft/tuner.h"

namespace peft {

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
