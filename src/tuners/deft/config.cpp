// DEFT's adapter_config.json: HF PEFT 0.21's DeftConfig fields.
#include <cmath>

#include "peft/deft.h"
#include "tuners/config_fields.h"
#include "tuners/registry.h"
#include "util/json_file.h"

namespace peft {

namespace {

const ojson& deft_defaults() {
  static const auto j = ojson::parse(R"({
    "alpha": null, "auto_mapping": null, "base_model_name_or_path": null, "bias": "none",
    "decomposition_method": "relu", "deft_dropout": 0.0, "exclude_modules": null, "fan_in_fan_out": false,
    "inference_mode": true, "init_scale": 1.0, "init_weights": true, "layers_pattern": null,
    "layers_to_transform": null, "modules_to_save": null, "para": false, "peft_type": "DEFT",
    "peft_version": "0.21.2", "r": 8, "revision": null, "target_modules": null, "task_type": null
  })");
  return j;
}

}  // namespace

DeftConfig DeftConfig::from_json(const ojson& j, const std::string& where, std::vector<std::string>* unknown) {
  DeftConfig c;
  ConfigFields f(j, deft_defaults(), "DEFT", where, unknown, c);
  c.r = f.get<int64_t>("r");
  if (!f.is_null("alpha")) c.alpha = f.get<double>("alpha");
  c.decomposition_method = f.get<std::string>("decomposition_method");
  c.deft_dropout = f.get<double>("deft_dropout");
  c.init_scale = f.get<double>("init_scale");
  c.init_weights = f.get<bool>("init_weights");
  c.para = f.get<bool>("para");
  c.fan_in_fan_out = f.get<bool>("fan_in_fan_out");
  c.bias = f.get<std::string>("bias");
  if (c.r <= 0 || c.r > (int64_t{1} << 20)) f.fail("'r' must be between 1 and 1048576, got " + std::to_string(c.r));
  if (c.alpha && !std::isfinite(*c.alpha)) f.fail("'alpha' must be finite");
  if (c.decomposition_method != "relu" && c.decomposition_method != "qr")
    f.fail("'decomposition_method' must be qr or relu, got '" + c.decomposition_method + "'");
  if (!(c.deft_dropout >= 0 && c.deft_dropout < 1)) f.fail("'deft_dropout' must be in [0, 1)");
  if (!std::isfinite(c.init_scale)) f.fail("'init_scale' must be finite");
  if (c.bias != "none" && c.bias != "all" && c.bias != "deft_only")
    f.fail("'bias' must be none, all or deft_only, got '" + c.bias + "'");
  if (c.targets.target_regex && (!c.targets.layers_to_transform.empty() || !c.targets.layers_pattern.empty()))
    f.fail("'layers_to_transform' and 'layers_pattern' need target_modules as a list, not a regex");
  if (!c.targets.layers_pattern.empty() && c.targets.layers_to_transform.empty())
    f.fail("'layers_pattern' needs 'layers_to_transform'");
  return c;
}

ojson DeftConfig::to_json() const {
  ojson fields;
  fields["r"] = r;
  if (!alpha)
    fields["alpha"] = nullptr;
  else if (*alpha == std::floor(*alpha) && std::abs(*alpha) < 1e15)
    fields["alpha"] = static_cast<int64_t>(*alpha);
  else
    fields["alpha"] = *alpha;
  fields["decomposition_method"] = decomposition_method;
  fields["deft_dropout"] = deft_dropout;
  fields["init_scale"] = init_scale;
  fields["init_weights"] = init_weights;
  fields["para"] = para;
  fields["fan_in_fan_out"] = fan_in_fan_out;
  fields["bias"] = bias;
  return config_json(*this, deft_defaults(), fields);
}

namespace {
[[maybe_unused]] const bool kDeftRegistered = register_method<DeftConfig>("DEFT");
}  // namespace

}  // namespace peft
