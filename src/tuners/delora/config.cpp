// DeLoRA's adapter_config.json: HF PEFT 0.21's DeloraConfig fields.
#include <cmath>

#include "peft/delora.h"
#include "tuners/config_fields.h"
#include "tuners/pattern_field.h"
#include "tuners/registry.h"
#include "util/json_file.h"

namespace peft {

namespace {

const ojson& delora_defaults() {
  static const auto j = ojson::parse(R"({
    "auto_mapping": null, "base_model_name_or_path": null, "bias": "none", "delora_lambda": 15,
    "exclude_modules": null, "inference_mode": true, "init_weights": true, "lambda_pattern": {},
    "layers_pattern": null, "layers_to_transform": null, "module_dropout": 0.0, "modules_to_save": null,
    "peft_type": "DELORA", "peft_version": "0.21.2", "r": 8, "rank_pattern": {}, "revision": null,
    "target_modules": null, "task_type": null
  })");
  return j;
}

}  // namespace

DeloraConfig DeloraConfig::from_json(const ojson& j, const std::string& where, std::vector<std::string>* unknown) {
  DeloraConfig c;
  ConfigFields f(j, delora_defaults(), "DELORA", where, unknown, c);
  c.r = f.get<int64_t>("r");
  c.delora_lambda = f.get<double>("delora_lambda");
  c.module_dropout = f.get<double>("module_dropout");
  c.bias = f.get<std::string>("bias");
  c.init_weights = f.get<bool>("init_weights");
  c.rank_pattern = read_pattern<int64_t>(f, "rank_pattern");
  c.lambda_pattern = read_pattern<double>(f, "lambda_pattern");
  if (c.r <= 0 || c.r > (int64_t{1} << 20)) f.fail("'r' must be between 1 and 1048576, got " + std::to_string(c.r));
  for (const auto& [k, r] : c.rank_pattern)
    if (r <= 0 || r > (int64_t{1} << 20)) f.fail("rank_pattern '" + k + "' must be between 1 and 1048576");
  if (!std::isfinite(c.delora_lambda)) f.fail("'delora_lambda' must be finite");
  for (const auto& [k, l] : c.lambda_pattern)
    if (!std::isfinite(l)) f.fail("lambda_pattern '" + k + "' must be finite");
  if (!(c.module_dropout >= 0 && c.module_dropout < 1)) f.fail("'module_dropout' must be in [0, 1)");
  if (c.bias != "none" && c.bias != "all" && c.bias != "delora_only")
    f.fail("'bias' must be none, all or delora_only, got '" + c.bias + "'");
  return c;
}

ojson DeloraConfig::to_json() const {
  ojson fields;
  fields["r"] = r;
  if (delora_lambda == std::floor(delora_lambda) && std::abs(delora_lambda) < 1e15)
    fields["delora_lambda"] = static_cast<int64_t>(delora_lambda);
  else
    fields["delora_lambda"] = delora_lambda;
  fields["module_dropout"] = module_dropout;
  fields["bias"] = bias;
  fields["init_weights"] = init_weights;
  fields["rank_pattern"] = pattern_json(rank_pattern);
  fields["lambda_pattern"] = pattern_json(lambda_pattern);
  return config_json(*this, delora_defaults(), fields);
}

namespace {
[[maybe_unused]] const bool kDeloraRegistered = register_method<DeloraConfig>("DELORA");
}  // namespace

}  // namespace peft
