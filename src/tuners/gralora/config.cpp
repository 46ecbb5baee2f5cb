// GraLoRA's adapter_config.json: HF PEFT 0.21's GraloraConfig fields.
#include <cmath>

#include "peft/gralora.h"
#include "tuners/config_fields.h"
#include "tuners/registry.h"
#include "util/json_file.h"

namespace peft {

namespace {

const ojson& gralora_defaults() {
  static const auto j = ojson::parse(R"({
    "alpha": 64, "auto_mapping": null, "base_model_name_or_path": null, "bias": "none", "fan_in_fan_out": false,
    "gralora_dropout": 0.0, "gralora_k": 2, "hybrid_r": 0, "inference_mode": true, "init_weights": true,
    "layers_pattern": null, "layers_to_transform": null, "modules_to_save": null, "peft_type": "GRALORA",
    "peft_version": "0.21.2", "r": 32, "revision": null, "target_modules": null, "task_type": null
  })");
  return j;
}

constexpr int64_t kMaxRank = int64_t{1} << 20;

}  // namespace

GraloraConfig GraloraConfig::from_json(const ojson& j, const std::string& where, std::vector<std::string>* unknown) {
  GraloraConfig c;
  ConfigFields f(j, gralora_defaults(), "GRALORA", where, unknown, c);
  c.r = f.get<int64_t>("r");
  c.hybrid_r = f.get<int64_t>("hybrid_r");
  c.alpha = f.get<double>("alpha");
  c.gralora_dropout = f.get<double>("gralora_dropout");
  c.gralora_k = f.get<int64_t>("gralora_k");
  c.fan_in_fan_out = f.get<bool>("fan_in_fan_out");
  c.bias = f.get<std::string>("bias");
  c.init_weights = f.get<bool>("init_weights");
  if (c.r <= 0 || c.r > kMaxRank) f.fail("'r' must be between 1 and 1048576, got " + std::to_string(c.r));
  if (c.hybrid_r < 0 || c.hybrid_r > kMaxRank)
    f.fail("'hybrid_r' must be between 0 and 1048576, got " + std::to_string(c.hybrid_r));
  if (c.gralora_k <= 0 || c.gralora_k > 4096)
    f.fail("'gralora_k' must be between 1 and 4096, got " + std::to_string(c.gralora_k));
  if (c.r % c.gralora_k != 0)
    f.fail("'r' (" + std::to_string(c.r) + ") must be divisible by 'gralora_k' (" + std::to_string(c.gralora_k) + ")");
  if (!std::isfinite(c.alpha)) f.fail("'alpha' must be finite");
  if (!(c.gralora_dropout >= 0 && c.gralora_dropout < 1)) f.fail("'gralora_dropout' must be in [0, 1)");
  if (c.bias != "none" && c.bias != "all" && c.bias != "gralora_only")
    f.fail("'bias' must be none, all or gralora_only, got '" + c.bias + "'");
  return c;
}

ojson GraloraConfig::to_json() const {
  ojson fields;
  fields["r"] = r;
  fields["hybrid_r"] = hybrid_r;
  if (alpha == std::floor(alpha) && std::abs(alpha) < 1e15)
    fields["alpha"] = static_cast<int64_t>(alpha);
  else
    fields["alpha"] = alpha;
  fields["gralora_dropout"] = gralora_dropout;
  fields["gralora_k"] = gralora_k;
  fields["fan_in_fan_out"] = fan_in_fan_out;
  fields["bias"] = bias;
  fields["init_weights"] = init_weights;
  return config_json(*this, gralora_defaults(), fields);
}

namespace {
[[maybe_unused]] const bool kGraloraRegistered = register_method<GraloraConfig>("GRALORA");
}  // namespace

}  // namespace peft
