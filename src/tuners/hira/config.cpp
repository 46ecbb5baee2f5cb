// HiRA's adapter_config.json: HF PEFT 0.21's HiraConfig fields.
#include <cmath>

#include "peft/hira.h"
#include "tuners/config_fields.h"
#include "tuners/pattern_field.h"
#include "tuners/registry.h"
#include "util/json_file.h"

namespace peft {

namespace {

const ojson& hira_defaults() {
  static const auto j = ojson::parse(R"({
    "auto_mapping": null, "base_model_name_or_path": null, "exclude_modules": null, "fan_in_fan_out": false,
    "hira_dropout": 0.0, "inference_mode": true, "init_weights": true, "layers_pattern": null,
    "layers_to_transform": null, "modules_to_save": null, "peft_type": "HIRA", "peft_version": "0.21.2", "r": 32,
    "rank_pattern": {}, "revision": null, "target_modules": null, "task_type": null
  })");
  return j;
}

constexpr int64_t kMaxRank = int64_t{1} << 20;

}  // namespace

HiraConfig HiraConfig::from_json(const ojson& j, const std::string& where, std::vector<std::string>* unknown) {
  HiraConfig c;
  ConfigFields f(j, hira_defaults(), "HIRA", where, unknown, c);
  c.r = f.get<int64_t>("r");
  c.hira_dropout = f.get<double>("hira_dropout");
  c.fan_in_fan_out = f.get<bool>("fan_in_fan_out");
  const ojson& init = f.value("init_weights");
  if (init.is_boolean())
    c.init_weights = init.get<bool>() ? "true" : "false";
  else if (init.is_string() && init.get<std::string>() == "gaussian")
    c.init_weights = "gaussian";
  else
    f.fail("'init_weights' must be true, false or \"gaussian\", got " + init.dump());
  c.rank_pattern = read_pattern<int64_t>(f, "rank_pattern");
  if (c.r <= 0 || c.r > kMaxRank) f.fail("'r' must be between 1 and 1048576, got " + std::to_string(c.r));
  for (const auto& [k, r] : c.rank_pattern)
    if (r <= 0 || r > kMaxRank) f.fail("rank_pattern '" + k + "' must be between 1 and 1048576");
  if (!(c.hira_dropout >= 0 && c.hira_dropout < 1)) f.fail("'hira_dropout' must be in [0, 1)");
  return c;
}

ojson HiraConfig::to_json() const {
  ojson fields;
  fields["r"] = r;
  fields["hira_dropout"] = hira_dropout;
  fields["fan_in_fan_out"] = fan_in_fan_out;
  fields["init_weights"] = init_weights == "gaussian" ? ojson("gaussian") : ojson(init_weights == "true");
  fields["rank_pattern"] = pattern_json(rank_pattern);
  return config_json(*this, hira_defaults(), fields);
}

namespace {
[[maybe_unused]] const bool kHiraRegistered = register_method<HiraConfig>("HIRA");
}  // namespace

}  // namespace peft
