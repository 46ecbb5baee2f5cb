// BOFT's adapter_config.json: HF PEFT 0.21's BOFTConfig fields.
#include "peft/boft.h"
#include "tuners/config_fields.h"
#include "tuners/registry.h"

namespace peft {

namespace {

const ojson& boft_defaults() {
  static const auto j = ojson::parse(R"({
    "auto_mapping": null, "base_model_name_or_path": null, "bias": "none", "boft_block_num": 0,
    "boft_block_size": 4, "boft_dropout": 0.0, "boft_n_butterfly_factor": 1, "exclude_modules": null,
    "fan_in_fan_out": false, "inference_mode": true, "init_weights": true, "layers_pattern": null,
    "layers_to_transform": null, "modules_to_save": null, "peft_type": "BOFT", "peft_version": "0.21.2",
    "revision": null, "target_modules": null, "task_type": null
  })");
  return j;
}

}  // namespace

BOFTConfig BOFTConfig::from_json(const ojson& j, const std::string& where, std::vector<std::string>* unknown) {
  BOFTConfig c;
  ConfigFields f(j, boft_defaults(), "BOFT", where, unknown, c);
  c.boft_block_size = f.get<int64_t>("boft_block_size");
  c.boft_block_num = f.get<int64_t>("boft_block_num");
  if (c.boft_block_size < 0 || c.boft_block_num < 0)
    f.fail("'boft_block_size' and 'boft_block_num' must not be negative");
  if (c.boft_block_size == 0 && c.boft_block_num == 0)
    f.fail("one of 'boft_block_size' and 'boft_block_num' must be non-zero");
  if (c.boft_block_size != 0 && c.boft_block_num != 0)
    f.fail("set either 'boft_block_size' or 'boft_block_num' (boft_block_size x boft_block_num = in_features), "
           "not both (give the other as 0)");
  c.boft_n_butterfly_factor = f.get<int64_t>("boft_n_butterfly_factor");
  if (c.boft_n_butterfly_factor < 1)
    f.fail("'boft_n_butterfly_factor' must be a positive integer, got " + std::to_string(c.boft_n_butterfly_factor));
  c.boft_dropout = f.get<double>("boft_dropout");
  if (!(c.boft_dropout >= 0.0 && c.boft_dropout < 1.0))
    f.fail("'boft_dropout' must be in [0, 1), got " + std::to_string(c.boft_dropout));
  c.fan_in_fan_out = f.get<bool>("fan_in_fan_out");
  c.bias = f.get<std::string>("bias");
  if (c.bias != "none" && c.bias != "all" && c.bias != "boft_only")
    f.fail("'bias' must be none, all or boft_only, got '" + c.bias + "'");
  c.init_weights = f.get<bool>("init_weights");
  if (!c.targets.layers_pattern.empty() && c.targets.layers_to_transform.empty())
    f.fail("'layers_pattern' needs 'layers_to_transform'");
  return c;
}

ojson BOFTConfig::to_json() const {
  ojson fields;
  fields["boft_block_size"] = boft_block_size;
  fields["boft_block_num"] = boft_block_num;
  fields["boft_n_butterfly_factor"] = boft_n_butterfly_factor;
  fields["boft_dropout"] = boft_dropout;
  fields["fan_in_fan_out"] = fan_in_fan_out;
  fields["bias"] = bias;
  fields["init_weights"] = init_weights;
  return config_json(*this, boft_defaults(), fields);
}

namespace {
[[maybe_unused]] const bool kBOFTRegistered = register_method<BOFTConfig>("BOFT");
}  // namespace

}  // namespace peft
