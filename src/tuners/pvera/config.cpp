// PVeRA's adapter_config.json: HF PEFT 0.21's PveraConfig fields.
#include "peft/pvera.h"
#include "tuners/config_fields.h"
#include "tuners/registry.h"
#include "tuners/seed_field.h"

namespace peft {

namespace {

const ojson& pvera_defaults() {
  static const auto j = ojson::parse(R"({
    "auto_mapping": null, "base_model_name_or_path": null, "bias": "none", "d_initial": 0.1,
    "fan_in_fan_out": false, "generator_seed": null, "inference_mode": true, "init_weights": true,
    "layers_pattern": null, "layers_to_transform": null, "modules_to_save": null, "peft_type": "PVERA",
    "peft_version": "0.21.2", "projection_prng_key": 0, "pvera_dropout": 0.0, "r": 256, "revision": null,
    "sample_at_inference": false, "save_projection": true, "target_modules": null, "task_type": null
  })");
  return j;
}

}  // namespace

PveraConfig PveraConfig::from_json(const ojson& j, const std::string& where, std::vector<std::string>* unknown) {
  PveraConfig c;
  ConfigFields f(j, pvera_defaults(), "PVERA", where, unknown, c);
  c.r = f.get<int64_t>("r");
  if (c.r <= 0) f.fail("'r' must be positive, got " + std::to_string(c.r));
  c.projection_prng_key = torch_seed_field(f, "projection_prng_key");
  c.save_projection = f.get<bool>("save_projection");
  c.pvera_dropout = f.get<double>("pvera_dropout");
  if (!(c.pvera_dropout >= 0.0 && c.pvera_dropout < 1.0))
    f.fail("'pvera_dropout' must be in [0, 1), got " + std::to_string(c.pvera_dropout));
  c.d_initial = f.get<double>("d_initial");
  c.fan_in_fan_out = f.get<bool>("fan_in_fan_out");
  c.bias = f.get<std::string>("bias");
  if (c.bias != "none" && c.bias != "all" && c.bias != "pvera_only")
    f.fail("'bias' must be none, all or pvera_only, got '" + c.bias + "'");
  c.init_weights = f.get<bool>("init_weights");
  c.sample_at_inference = f.get<bool>("sample_at_inference");
  if (!f.is_null("generator_seed")) c.generator_seed = torch_seed_field(f, "generator_seed");
  if (!c.targets.layers_pattern.empty() && c.targets.layers_to_transform.empty())
    f.fail("'layers_pattern' needs 'layers_to_transform'");
  return c;
}

ojson PveraConfig::to_json() const {
  ojson fields;
  fields["r"] = r;
  fields["projection_prng_key"] = torch_seed_json(projection_prng_key);
  fields["save_projection"] = save_projection;
  fields["pvera_dropout"] = pvera_dropout;
  fields["d_initial"] = d_initial;
  fields["fan_in_fan_out"] = fan_in_fan_out;
  fields["bias"] = bias;
  fields["init_weights"] = init_weights;
  fields["sample_at_inference"] = sample_at_inference;
  fields["generator_seed"] = generator_seed ? torch_seed_json(*generator_seed) : ojson(nullptr);
  return config_json(*this, pvera_defaults(), fields);
}

namespace {
[[maybe_unused]] const bool kPveraRegistered = register_method<PveraConfig>("PVERA");
}  // namespace

}  // namespace peft
