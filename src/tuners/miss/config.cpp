// MiSS's adapter_config.json: HF PEFT 0.21's MissConfig fields.
#include "peft/miss.h"
#include "tuners/config_fields.h"
#include "tuners/registry.h"

namespace peft {

namespace {

const ojson& miss_defaults() {
  static const auto j = ojson::parse(R"({
    "auto_mapping": null, "base_model_name_or_path": null, "bias": "none", "exclude_modules": null,
    "inference_mode": true, "init_weights": true, "layers_pattern": null, "layers_to_transform": null,
    "mini_r": 1, "miss_dropout": 0.0, "modules_to_save": null, "peft_type": "MISS", "peft_version": "0.21.2",
    "r": 64, "revision": null, "target_modules": null, "task_type": null
  })");
  return j;
}

}  // namespace

MissConfig MissConfig::from_json(const ojson& j, const std::string& where, std::vector<std::string>* unknown) {
  MissConfig c;
  ConfigFields f(j, miss_defaults(), "MISS", where, unknown, c);
  c.r = f.get<int64_t>("r");
  if (c.r <= 0) f.fail("'r' must be positive, got " + std::to_string(c.r));
  c.miss_dropout = f.get<double>("miss_dropout");
  if (!(c.miss_dropout >= 0.0 && c.miss_dropout < 1.0))
    f.fail("'miss_dropout' must be in [0, 1), got " + std::to_string(c.miss_dropout));
  c.mini_r = f.get<int64_t>("mini_r");
  if (c.mini_r <= 0) f.fail("'mini_r' must be positive, got " + std::to_string(c.mini_r));
  const auto& init = f.value("init_weights");
  if (init.is_boolean())
    c.init_weights = init.get<bool>() ? "true" : "false";
  else if (init.is_string() && (init == "bat" || init == "mini"))
    c.init_weights = init.get<std::string>();
  else
    f.fail("'init_weights' must be true, false, \"bat\" or \"mini\", got " + init.dump());
  c.bias = f.get<std::string>("bias");
  if (c.bias != "none" && c.bias != "all" && c.bias != "miss_only")
    f.fail("'bias' must be none, all or miss_only, got '" + c.bias + "'");
  if (c.targets.target_regex && (!c.targets.layers_to_transform.empty() || !c.targets.layers_pattern.empty()))
    f.fail("'layers_to_transform' / 'layers_pattern' cannot be used when 'target_modules' is a regex");
  return c;
}

ojson MissConfig::to_json() const {
  ojson fields;
  fields["r"] = r;
  fields["miss_dropout"] = miss_dropout;
  fields["mini_r"] = mini_r;
  if (init_weights == "true" || init_weights == "false")
    fields["init_weights"] = init_weights == "true";
  else
    fields["init_weights"] = init_weights;
  fields["bias"] = bias;
  return config_json(*this, miss_defaults(), fields);
}

namespace {
[[maybe_unused]] const bool kMissRegistered = register_method<MissConfig>("MISS");
}  // namespace

}  // namespace peft
