// HRA's adapter_config.json: HF PEFT 0.21's HRAConfig fields.
#include "peft/hra.h"
#include "tuners/config_fields.h"
#include "tuners/registry.h"

namespace peft {

namespace {

const ojson& hra_defaults() {
  static const auto j = ojson::parse(R"({
    "apply_GS": false, "auto_mapping": null, "base_model_name_or_path": null, "bias": "none",
    "exclude_modules": null, "inference_mode": true, "init_weights": true, "layers_pattern": null,
    "layers_to_transform": null, "modules_to_save": null, "peft_type": "HRA", "peft_version": "0.21.2", "r": 8,
    "revision": null, "target_modules": null, "task_type": null
  })");
  return j;
}

}  // namespace

HRAConfig HRAConfig::from_json(const ojson& j, const std::string& where, std::vector<std::string>* unknown) {
  HRAConfig c;
  ConfigFields f(j, hra_defaults(), "HRA", where, unknown, c);
  c.r = f.get<int64_t>("r");
  if (c.r <= 0) f.fail("'r' must be positive, got " + std::to_string(c.r));
  c.apply_GS = f.get<bool>("apply_GS");
  c.init_weights = f.get<bool>("init_weights");
  c.bias = f.get<std::string>("bias");
  if (c.bias != "none" && c.bias != "all" && c.bias != "hra_only")
    f.fail("'bias' must be none, all or hra_only, got '" + c.bias + "'");
  if (c.targets.target_regex && (!c.targets.layers_to_transform.empty() || !c.targets.layers_pattern.empty()))
    f.fail("'layers_to_transform' / 'layers_pattern' cannot be used when 'target_modules' is a regex");
  if (!c.targets.layers_pattern.empty() && c.targets.layers_to_transform.empty())
    f.fail("'layers_pattern' needs 'layers_to_transform'");
  return c;
}

ojson HRAConfig::to_json() const {
  ojson fields;
  fields["r"] = r;
  fields["apply_GS"] = apply_GS;
  fields["init_weights"] = init_weights;
  fields["bias"] = bias;
  return config_json(*this, hra_defaults(), fields);
}

namespace {
[[maybe_unused]] const bool kHRARegistered = register_method<HRAConfig>("HRA");
}  // namespace

}  // namespace peft
