#include "peft/ln_tuning.h"
#include "tuners/config_fields.h"
#include "tuners/target_match.h"

namespace peft {

namespace {

const ojson& ln_defaults() {
  static const auto j = ojson::parse(R"({
    "auto_mapping": null, "base_model_name_or_path": null, "exclude_modules": null, "inference_mode": true,
    "modules_to_save": null, "peft_type": "LN_TUNING", "peft_version": "0.21.2", "revision": null,
    "target_modules": null, "task_type": null
  })");
  return j;
}

const ojson& bitfit_defaults() {
  static const auto j = ojson::parse(R"({
    "base_model_name_or_path": null, "exclude_modules": null, "inference_mode": true, "modules_to_save": null,
    "peft_type": "BITFIT", "target_modules": null, "task_type": null
  })");
  return j;
}

// HF PEFT's TRANSFORMERS_MODELS_TO_LNTUNING_TARGET_MODULES_MAPPING for our models.
const std::vector<std::pair<std::string, std::vector<std::string>>> kLNTargets = {
    {"llama", {"input_layernorm", "post_attention_layernorm", "norm"}},
    {"mistral", {"input_layernorm", "post_attention_layernorm", "norm"}},
    {"qwen2", {"post_attention_layernorm"}},
    {"gpt2", {"ln_1", "ln_2", "ln_f"}}};

bool has_bias(Module* m) {
  bool found = false;
  for (const auto& [n, t] : m->named_parameters())
    if (n == "bias") found = true;
  return found;
}

}  // namespace

LNTuningConfig LNTuningConfig::from_json(const ojson& j, const std::string& where, std::vector<std::string>* unknown) {
  LNTuningConfig c;
  ConfigFields f(j, ln_defaults(), "LN_TUNING", where, unknown, c);
  return c;
}

ojson LNTuningConfig::to_json() const { return config_json(*this, ln_defaults(), ojson::object()); }

void LNTuningConfig::resolve(const Model& model) {
  if (targets.empty()) targets.target_list = default_targets(model, "LN_TUNING", kLNTargets);
}

std::vector<CopySpec> LNTuningConfig::copies(Model& model) const {
  std::vector<CopySpec> out;
  for (const auto& [path, m] : find_targets(model, targets, task_type)) out.push_back({path, m, {}, "ln_tuning_layers."});
  return out;
}

BitFitConfig BitFitConfig::from_json(const ojson& j, const std::string& where, std::vector<std::string>* unknown) {
  BitFitConfig c;
  ConfigFields f(j, bitfit_defaults(), "BITFIT", where, unknown, c);
  return c;
}

ojson BitFitConfig::to_json() const { return config_json(*this, bitfit_defaults(), ojson::object()); }

std::vector<CopySpec> BitFitConfig::copies(Model& model) const {
  std::vector<CopySpec> out;
  if (targets.empty()) {
    for (const auto& [path, m] : model.named_modules())
      if (!path.empty() && !dynamic_cast<LayerAdapter*>(m) && has_bias(m)) {
        bool saved = false;  // modules_to_save train whole; is_target's rule for them
        for (const auto& s : targets.modules_to_save)
          if (path == s || path.ends_with("." + s)) saved = true;
        if (!saved) out.push_back({path, m, {"bias"}, ""});
      }
    if (out.empty()) throw std::invalid_argument("BITFIT: " + model.type_name() + " has no bias terms");
    return out;
  }
  for (const auto& [path, m] : find_targets(model, targets, task_type)) {
    if (!has_bias(m)) throw std::invalid_argument("BITFIT: target module '" + path + "' has no bias");
    out.push_back({path, m, {"bias"}, ""});
  }
  return out;
}

}  // namespace peft
