// TINYLORA's adapter_config.json: HF PEFT 0.21's TinyLoraConfig fields (it has no
// exclude_modules).
#include <cmath>

#include "peft/tinylora.h"
#include "tuners/config_fields.h"
#include "tuners/registry.h"
#include "tuners/seed_field.h"

namespace peft {

namespace {

const ojson& tinylora_defaults() {
  static const auto j = ojson::parse(R"({
    "auto_mapping": null, "base_model_name_or_path": null, "bias": "none", "fan_in_fan_out": false,
    "inference_mode": true, "init_v_bound": 0.02, "init_weights": true, "layers_pattern": null,
    "layers_to_transform": null, "modules_to_save": null, "peft_type": "TINYLORA", "peft_version": "0.21.2",
    "projection_seed": 42, "r": 2, "revision": null, "save_projection": true, "target_modules": null,
    "task_type": null, "tinylora_dropout": 0.0, "u": 64, "weight_tying": 0.0
  })");
  return j;
}

constexpr int64_t kMaxRank = int64_t{1} << 20;

}  // namespace

TinyLoraConfig TinyLoraConfig::from_json(const ojson& j, const std::string& where, std::vector<std::string>* unknown) {
  TinyLoraConfig c;
  ConfigFields f(j, tinylora_defaults(), "TINYLORA", where, unknown, c);
  c.r = f.get<int64_t>("r");
  c.u = f.get<int64_t>("u");
  c.weight_tying = f.get<double>("weight_tying");
  c.projection_seed = torch_seed_field(f, "projection_seed");
  c.save_projection = f.get<bool>("save_projection");
  c.init_v_bound = f.get<double>("init_v_bound");
  c.tinylora_dropout = f.get<double>("tinylora_dropout");
  c.fan_in_fan_out = f.get<bool>("fan_in_fan_out");
  c.bias = f.get<std::string>("bias");
  const ojson& init = f.value("init_weights");
  if (init.is_boolean())
    c.init_weights = init.get<bool>() ? "true" : "false";
  else if (init.is_string() && init.get<std::string>() == "uniform")
    c.init_weights = "uniform";
  else
    f.fail("'init_weights' must be true, false or \"uniform\", got " + init.dump());
  if (c.r <= 0 || c.r > kMaxRank) f.fail("'r' must be a positive integer (at most 1048576), got " + std::to_string(c.r));
  if (c.u <= 0 || c.u > kMaxRank) f.fail("'u' must be a positive integer (at most 1048576), got " + std::to_string(c.u));
  if (!(c.weight_tying >= 0.0 && c.weight_tying <= 1.0))
    f.fail("'weight_tying' must be a float between 0.0 and 1.0, got " + std::to_string(c.weight_tying));
  if (!(c.tinylora_dropout >= 0.0 && c.tinylora_dropout < 1.0))
    f.fail("'tinylora_dropout' must be in [0, 1), got " + std::to_string(c.tinylora_dropout));
  if (!std::isfinite(c.init_v_bound)) f.fail("'init_v_bound' must be finite");
  if (c.bias != "none" && c.bias != "all" && c.bias != "tinylora_only")
    f.fail("'bias' must be none, all or tinylora_only, got '" + c.bias + "'");
  if (!c.targets.layers_pattern.empty() && c.targets.layers_to_transform.empty())
    f.fail("'layers_pattern' needs 'layers_to_transform'");
  return c;
}

ojson TinyLoraConfig::to_json() const {
  ojson fields;
  fields["r"] = r;
  fields["u"] = u;
  fields["weight_tying"] = weight_tying;
  fields["projection_seed"] = torch_seed_json(projection_seed);
  fields["save_projection"] = save_projection;
  fields["init_v_bound"] = init_v_bound;
  fields["tinylora_dropout"] = tinylora_dropout;
  fields["fan_in_fan_out"] = fan_in_fan_out;
  fields["bias"] = bias;
  fields["init_weights"] = init_weights == "uniform" ? ojson("uniform") : ojson(init_weights == "true");
  return config_json(*this, tinylora_defaults(), fields);
}

namespace {
[[maybe_unused]] const bool kTinyLoraRegistered = register_method<TinyLoraConfig>("TINYLORA");
}  // namespace

}  // namespace peft
