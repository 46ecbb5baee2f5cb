// UniLoRA's adapter_config.json: HF PEFT 0.21's UniLoraConfig fields and checks.
#include <cmath>

#include "peft/unilora.h"
#include "tuners/config_fields.h"
#include "tuners/registry.h"

namespace peft {

namespace {

const ojson& unilora_defaults() {
  static const auto j = ojson::parse(R"({
    "auto_mapping": null, "base_model_name_or_path": null, "bias": "none", "fan_in_fan_out": false,
    "inference_mode": true, "init_theta_d_bound": 0.02, "init_weights": true, "layers_pattern": null,
    "layers_to_transform": null, "modules_to_save": null, "peft_type": "UNILORA", "peft_version": "0.21.2",
    "proj_seed": 42, "r": 4, "revision": null, "save_indices": false, "target_modules": null, "task_type": null,
    "theta_d_length": 256, "unilora_dropout": 0.0
  })");
  return j;
}

constexpr int64_t kMaxRank = int64_t{1} << 20;
constexpr int64_t kMaxLength = int64_t{1} << 31;

}  // namespace

UniloraConfig UniloraConfig::from_json(const ojson& j, const std::string& where, std::vector<std::string>* unknown) {
  UniloraConfig c;
  ConfigFields f(j, unilora_defaults(), "UNILORA", where, unknown, c);
  c.r = f.get<int64_t>("r");
  c.proj_seed = f.get<int64_t>("proj_seed");
  c.theta_d_length = f.get<int64_t>("theta_d_length");
  c.unilora_dropout = f.get<double>("unilora_dropout");
  c.fan_in_fan_out = f.get<bool>("fan_in_fan_out");
  c.bias = f.get<std::string>("bias");
  c.init_theta_d_bound = f.get<double>("init_theta_d_bound");
  c.init_weights = f.get<bool>("init_weights");
  c.save_indices = f.get<bool>("save_indices");
  if (c.r <= 0 || c.r > kMaxRank) f.fail("'r' must be between 1 and 1048576, got " + std::to_string(c.r));
  if (c.theta_d_length <= 0 || c.theta_d_length > kMaxLength)
    f.fail("'theta_d_length' must be between 1 and 2^31, got " + std::to_string(c.theta_d_length));
  // NumPy's SeedSequence takes no negative seed.
  if (c.proj_seed < 0) f.fail("'proj_seed' must not be negative (a NumPy seed), got " + std::to_string(c.proj_seed));
  if (!(c.unilora_dropout >= 0 && c.unilora_dropout <= 1)) f.fail("'unilora_dropout' must be in [0, 1]");
  if (!(c.init_theta_d_bound > 0 && std::isfinite(c.init_theta_d_bound)))
    f.fail("'init_theta_d_bound' must be a positive number");
  if (c.bias != "none" && c.bias != "all" && c.bias != "unilora_only")
    f.fail("'bias' must be none, all or unilora_only, got '" + c.bias + "'");
  if (c.targets.target_regex && !c.targets.layers_to_transform.empty())
    f.fail("'layers_to_transform' cannot be used when 'target_modules' is a string");
  if (c.targets.target_regex && !c.targets.layers_pattern.empty())
    f.fail("'layers_pattern' cannot be used when 'target_modules' is a string");
  return c;
}

ojson UniloraConfig::to_json() const {
  ojson fields;
  fields["r"] = r;
  fields["proj_seed"] = proj_seed;
  fields["theta_d_length"] = theta_d_length;
  fields["unilora_dropout"] = unilora_dropout;
  fields["fan_in_fan_out"] = fan_in_fan_out;
  fields["bias"] = bias;
  fields["init_theta_d_bound"] = init_theta_d_bound;
  fields["init_weights"] = init_weights;
  fields["save_indices"] = save_indices;
  return config_json(*this, unilora_defaults(), fields);
}

namespace {
[[maybe_unused]] const bool kUniloraRegistered = register_method<UniloraConfig>("UNILORA");
}  // namespace

}  // namespace peft
