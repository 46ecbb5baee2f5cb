// LayerNorm tuning: config and injection (trainable copies of the targeted norms).
#include "tuners/registry.h"
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

// HF PEFT's TRANSFORMERS_MODELS_TO_LNTUNING_TARGET_MODULES_MAPPING for our models.
const std::vector<std::pair<std::string, std::vector<std::string>>> kLNTargets = {
    {"llama", {"input_layernorm", "post_attention_layernorm", "norm"}},
    {"mistral", {"input_layernorm", "post_attention_layernorm", "norm"}},
    {"qwen2", {"post_attention_layernorm"}},
    {"qwen3", {"post_attention_layernorm"}},
    {"gemma", {"input_layernorm", "post_attention_layernorm", "norm"}},
    {"phi", {"input_layernorm", "final_layernorm"}},
    {"gemma2", {"input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm", "norm"}},
    {"gemma3_text",
     {"input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm", "norm"}},
    {"gpt2", {"ln_1", "ln_2", "ln_f"}},
    {"bloom", {"input_layernorm", "post_attention_layernorm", "ln_f"}},
    {"falcon", {"input_layernorm", "post_attention_layernorm", "ln_f"}},
    {"gptj", {"ln_1", "ln_f"}},
    {"bart", {"self_attn_layer_norm", "encoder_attn_layer_norm", "final_layer_norm"}}};

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


namespace {
[[maybe_unused]] const bool kLNTuningRegistered = register_method<LNTuningConfig>("LN_TUNING");
}  // namespace

}  // namespace peft
