// Super-Tuning's adapter_config.json: HF PEFT 0.21's SupertuningConfig fields (it has no
// exclude_modules / layers_to_transform / layers_pattern) and its __post_init__ checks.
#include <cmath>

#include "peft/supertuning.h"
#include "tuners/config_fields.h"
#include "tuners/registry.h"

namespace peft {

namespace {

const ojson& supertuning_defaults() {
  static const auto j = ojson::parse(R"({
    "auto_mapping": null, "base_model_name_or_path": null, "inference_mode": true, "init_weights": true,
    "lora_alpha": null, "lora_dropout": 0.0, "modules_to_save": null, "peft_type": "SUPERTUNING",
    "peft_version": "0.21.2", "r": null, "revision": null, "save_precomputed_indices": true,
    "select_top": true, "sparsity": 0.99, "target_modules": null, "task_type": null
  })");
  return j;
}

}  // namespace

SupertuningConfig SupertuningConfig::from_json(const ojson& j, const std::string& where,
                                               std::vector<std::string>* unknown) {
  SupertuningConfig c;
  ConfigFields f(j, supertuning_defaults(), "SUPERTUNING", where, unknown, c);
  c.sparsity = f.get<double>("sparsity");
  c.select_top = f.get<bool>("select_top");
  if (!f.is_null("r")) c.r = f.get<int64_t>("r");
  if (!f.is_null("lora_alpha")) c.lora_alpha = f.get<double>("lora_alpha");
  c.lora_dropout = f.get<double>("lora_dropout");
  c.init_weights = f.get<bool>("init_weights");
  c.save_precomputed_indices = f.get<bool>("save_precomputed_indices");
  if (!(c.sparsity >= 0 && c.sparsity < 1)) f.fail("'sparsity' must be in [0.0, 1.0)");
  if (c.r && (*c.r <= 0 || *c.r > (int64_t{1} << 20)))
    f.fail("'r' must be a positive integer (up to 1048576) or null, got " + std::to_string(*c.r));
  if (!c.r && c.lora_alpha) f.fail("'lora_alpha' is set but 'r' is null: Supra mode needs an explicit r");
  if (c.r && !c.lora_alpha) c.lora_alpha = 2.0 * static_cast<double>(*c.r);  // HF's __post_init__
  if (c.lora_alpha && !std::isfinite(*c.lora_alpha)) f.fail("'lora_alpha' must be finite");
  if (!(c.lora_dropout >= 0 && c.lora_dropout < 1)) f.fail("'lora_dropout' must be in [0.0, 1.0)");
  return c;
}

ojson SupertuningConfig::to_json() const {
  ojson fields;
  fields["sparsity"] = sparsity;
  fields["select_top"] = select_top;
  fields["r"] = r ? ojson(*r) : ojson(nullptr);
  if (!lora_alpha)
    fields["lora_alpha"] = nullptr;
  else if (*lora_alpha == std::floor(*lora_alpha) && std::abs(*lora_alpha) < 1e15)
    fields["lora_alpha"] = static_cast<int64_t>(*lora_alpha);
  else
    fields["lora_alpha"] = *lora_alpha;
  fields["lora_dropout"] = lora_dropout;
  fields["init_weights"] = init_weights;
  fields["save_precomputed_indices"] = save_precomputed_indices;
  return config_json(*this, supertuning_defaults(), fields);
}

namespace {
[[maybe_unused]] const bool kSupertuningRegistered = register_method<SupertuningConfig>("SUPERTUNING");
}  // namespace

}  // namespace peft
