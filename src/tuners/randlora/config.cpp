// RandLoRA's adapter_config.json: HF PEFT 0.21's RandLoraConfig fields (it has no
// exclude_modules).
#include <cmath>

#include "peft/randlora.h"
#include "tuners/config_fields.h"
#include "tuners/registry.h"
#include "tuners/seed_field.h"

namespace peft {

namespace {

const ojson& randlora_defaults() {
  static const auto j = ojson::parse(R"({
    "auto_mapping": null, "base_model_name_or_path": null, "bias": "none", "fan_in_fan_out": false,
    "inference_mode": true, "init_weights": true, "layers_pattern": null, "layers_to_transform": null,
    "modules_to_save": null, "peft_type": "RANDLORA", "peft_version": "0.21.2", "projection_prng_key": 0,
    "r": 32, "randlora_alpha": 640, "randlora_dropout": 0.0, "revision": null, "save_projection": true,
    "sparse": false, "target_modules": null, "task_type": null, "very_sparse": false
  })");
  return j;
}

}  // namespace

RandLoraConfig RandLoraConfig::from_json(const ojson& j, const std::string& where, std::vector<std::string>* unknown) {
  RandLoraConfig c;
  ConfigFields f(j, randlora_defaults(), "RANDLORA", where, unknown, c);
  c.r = f.get<int64_t>("r");
  if (c.r <= 0) f.fail("'r' must be positive, got " + std::to_string(c.r));
  c.projection_prng_key = torch_seed_field(f, "projection_prng_key");
  c.save_projection = f.get<bool>("save_projection");
  c.sparse = f.get<bool>("sparse");
  c.very_sparse = f.get<bool>("very_sparse");
  c.randlora_dropout = f.get<double>("randlora_dropout");
  if (!(c.randlora_dropout >= 0.0 && c.randlora_dropout < 1.0))
    f.fail("'randlora_dropout' must be in [0, 1), got " + std::to_string(c.randlora_dropout));
  c.randlora_alpha = f.get<double>("randlora_alpha");
  if (!std::isfinite(c.randlora_alpha)) f.fail("'randlora_alpha' must be a finite number");
  c.fan_in_fan_out = f.get<bool>("fan_in_fan_out");
  c.bias = f.get<std::string>("bias");
  if (c.bias != "none" && c.bias != "all" && c.bias != "randlora_only")
    f.fail("'bias' must be none, all or randlora_only, got '" + c.bias + "'");
  c.init_weights = f.get<bool>("init_weights");
  if (!c.targets.layers_pattern.empty() && c.targets.layers_to_transform.empty())
    f.fail("'layers_pattern' needs 'layers_to_transform'");
  return c;
}

ojson RandLoraConfig::to_json() const {
  ojson fields;
  fields["r"] = r;
  fields["projection_prng_key"] = torch_seed_json(projection_prng_key);
  fields["save_projection"] = save_projection;
  fields["sparse"] = sparse;
  fields["very_sparse"] = very_sparse;
  fields["randlora_dropout"] = randlora_dropout;
  // HF's field is an int (640): a whole alpha is written as one.
  if (randlora_alpha == std::floor(randlora_alpha) && std::abs(randlora_alpha) < 9e15)
    fields["randlora_alpha"] = static_cast<int64_t>(randlora_alpha);
  else
    fields["randlora_alpha"] = randlora_alpha;
  fields["fan_in_fan_out"] = fan_in_fan_out;
  fields["bias"] = bias;
  fields["init_weights"] = init_weights;
  return config_json(*this, randlora_defaults(), fields);
}

namespace {
[[maybe_unused]] const bool kRandLoraRegistered = register_method<RandLoraConfig>("RANDLORA");
}  // namespace

}  // namespace peft
