// GLoRA's adapter_config.json: HF PEFT 0.21's GloraConfig fields.
#include <set>

#include "peft/glora.h"
#include "tuners/config_fields.h"
#include "tuners/registry.h"
#include "util/json_file.h"

namespace peft {

namespace {

const ojson& glora_defaults() {
  static const auto j = ojson::parse(R"({
    "auto_mapping": null, "base_model_name_or_path": null, "bias": "none", "config_A_B": "lora", "config_C": "lora",
    "config_D_E": "constant", "inference_mode": true, "init_weights": true, "modules_to_save": null,
    "peft_type": "GLORA", "peft_version": "0.21.2", "r": 8, "revision": null, "target_modules": null,
    "task_type": null
  })");
  return j;
}

constexpr int64_t kMaxRank = int64_t{1} << 20;

// HF's __post_init__ check: "Invalid config_C value: 'constant'. Valid values are: ...".
void check_kind(const ConfigFields& f, const char* key, const std::string& v, const std::set<std::string>& valid) {
  if (valid.count(v)) return;
  std::string list;
  for (const auto& k : valid) list += (list.empty() ? "" : ", ") + k;
  f.fail("'" + std::string(key) + "' must be one of " + list + ", got '" + v + "'");
}

}  // namespace

GloraConfig GloraConfig::from_json(const ojson& j, const std::string& where, std::vector<std::string>* unknown) {
  GloraConfig c;
  ConfigFields f(j, glora_defaults(), "GLORA", where, unknown, c);
  c.r = f.get<int64_t>("r");
  c.config_A_B = f.get<std::string>("config_A_B");
  c.config_C = f.get<std::string>("config_C");
  c.config_D_E = f.get<std::string>("config_D_E");
  c.bias = f.get<std::string>("bias");
  c.init_weights = f.get<bool>("init_weights");
  if (c.r <= 0 || c.r > kMaxRank) f.fail("'r' must be between 1 and 1048576, got " + std::to_string(c.r));
  check_kind(f, "config_A_B", c.config_A_B, {"constant", "lora", "none", "vector"});
  check_kind(f, "config_C", c.config_C, {"lora", "none", "vector"});
  check_kind(f, "config_D_E", c.config_D_E, {"constant", "none", "vector"});
  if (c.bias != "none" && c.bias != "all" && c.bias != "glora_only")
    f.fail("'bias' must be none, all or glora_only, got '" + c.bias + "'");
  return c;
}

ojson GloraConfig::to_json() const {
  ojson fields;
  fields["r"] = r;
  fields["config_A_B"] = config_A_B;
  fields["config_C"] = config_C;
  fields["config_D_E"] = config_D_E;
  fields["bias"] = bias;
  fields["init_weights"] = init_weights;
  return config_json(*this, glora_defaults(), fields);
}

namespace {
[[maybe_unused]] const bool kGloraRegistered = register_method<GloraConfig>("GLORA");
}  // namespace

}  // namespace peft
