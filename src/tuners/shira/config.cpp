// SHiRA's adapter_config.json: HF PEFT 0.21's ShiraConfig fields (it has no
// exclude_modules / layers_to_transform / layers_pattern).
#include "peft/shira.h"
#include "tuners/config_fields.h"
#include "tuners/registry.h"

namespace peft {

namespace {

const ojson& shira_defaults() {
  static const auto j = ojson::parse(R"({
    "auto_mapping": null, "base_model_name_or_path": null, "fan_in_fan_out": false, "inference_mode": true,
    "init_weights": true, "mask_type": "random", "modules_to_save": null, "peft_type": "SHIRA",
    "peft_version": "0.21.2", "r": 32, "random_seed": null, "revision": null, "target_modules": null,
    "task_type": null
  })");
  return j;
}

}  // namespace

ShiraConfig ShiraConfig::from_json(const ojson& j, const std::string& where, std::vector<std::string>* unknown) {
  ShiraConfig c;
  ConfigFields f(j, shira_defaults(), "SHIRA", where, unknown, c);
  c.r = f.get<int64_t>("r");
  if (c.r <= 0) f.fail("'r' must be positive, got " + std::to_string(c.r));
  c.mask_type = f.get<std::string>("mask_type");
  // torch.Generator.manual_seed takes any 64-bit integer; a negative one wraps as uint64.
  const auto& seed = f.value("random_seed");
  if (!seed.is_null())
    c.random_seed = seed.is_number_unsigned() ? seed.get<uint64_t>()
                                              : static_cast<uint64_t>(f.get<int64_t>("random_seed"));
  c.fan_in_fan_out = f.get<bool>("fan_in_fan_out");
  c.init_weights = f.get<bool>("init_weights");
  return c;
}

ojson ShiraConfig::to_json() const {
  ojson fields;
  fields["r"] = r;
  fields["mask_type"] = mask_type;
  if (!random_seed)
    fields["random_seed"] = nullptr;
  else if (*random_seed > static_cast<uint64_t>(INT64_MAX))
    fields["random_seed"] = static_cast<int64_t>(*random_seed);  // negative in the file
  else
    fields["random_seed"] = *random_seed;
  fields["fan_in_fan_out"] = fan_in_fan_out;
  fields["init_weights"] = init_weights;
  return config_json(*this, shira_defaults(), fields);
}

namespace {
[[maybe_unused]] const bool kShiraRegistered = register_method<ShiraConfig>("SHIRA");
}  // namespace

}  // namespace peft
