// FRoD's adapter_config.json: HF PEFT 0.21's FrodConfig fields.
#include <cmath>

#include "peft/frod.h"
#include "tuners/config_fields.h"
#include "tuners/registry.h"
#include "tuners/seed_field.h"

namespace peft {

namespace {

const ojson& frod_defaults() {
  static const auto j = ojson::parse(R"({
    "auto_mapping": null, "base_model_name_or_path": null, "bias": "none", "fan_in_fan_out": false,
    "frod_dropout": 0.0, "inference_mode": true, "init_weights": true, "layers_pattern": null,
    "layers_to_transform": null, "modules_to_save": null, "peft_type": "FROD", "peft_version": "0.21.2",
    "progressbar": true, "projection_prng_key": 0, "regularization_alpha": 0.001, "revision": null,
    "runtime_offload_base_weight": false, "save_projection": true, "sparse_rate": 0.01,
    "target_modules": null, "task_type": null
  })");
  return j;
}

}  // namespace

FrodConfig FrodConfig::from_json(const ojson& j, const std::string& where, std::vector<std::string>* unknown) {
  FrodConfig c;
  ConfigFields f(j, frod_defaults(), "FROD", where, unknown, c);
  c.projection_prng_key = torch_seed_field(f, "projection_prng_key");
  c.save_projection = f.get<bool>("save_projection");
  c.frod_dropout = f.get<double>("frod_dropout");
  c.fan_in_fan_out = f.get<bool>("fan_in_fan_out");
  c.bias = f.get<std::string>("bias");
  c.init_weights = f.get<bool>("init_weights");
  c.sparse_rate = f.get<double>("sparse_rate");
  c.regularization_alpha = f.get<double>("regularization_alpha");
  c.progressbar = f.get<bool>("progressbar");
  c.runtime_offload_base_weight = f.get<bool>("runtime_offload_base_weight");
  if (!(c.frod_dropout >= 0.0 && c.frod_dropout < 1.0))
    f.fail("'frod_dropout' must be in [0, 1), got " + std::to_string(c.frod_dropout));
  if (c.bias != "none" && c.bias != "all" && c.bias != "frod_only")
    f.fail("'bias' must be none, all or frod_only, got '" + c.bias + "'");
  if (!(c.sparse_rate >= 0.0 && c.sparse_rate <= 1.0))
    f.fail("'sparse_rate' should be between 0 and 1, got " + std::to_string(c.sparse_rate));
  if (!std::isfinite(c.regularization_alpha)) f.fail("'regularization_alpha' must be finite");
  if (!c.targets.layers_pattern.empty() && c.targets.layers_to_transform.empty())
    f.fail("'layers_pattern' needs 'layers_to_transform'");
  return c;
}

ojson FrodConfig::to_json() const {
  ojson fields;
  fields["projection_prng_key"] = torch_seed_json(projection_prng_key);
  fields["save_projection"] = save_projection;
  fields["frod_dropout"] = frod_dropout;
  fields["fan_in_fan_out"] = fan_in_fan_out;
  fields["bias"] = bias;
  fields["init_weights"] = init_weights;
  fields["sparse_rate"] = sparse_rate;
  fields["regularization_alpha"] = regularization_alpha;
  fields["progressbar"] = progressbar;
  fields["runtime_offload_base_weight"] = runtime_offload_base_weight;
  return config_json(*this, frod_defaults(), fields);
}

namespace {
[[maybe_unused]] const bool kFrodRegistered = register_method<FrodConfig>("FROD");
}  // namespace

}  // namespace peft
