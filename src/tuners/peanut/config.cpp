// PEANuT's adapter_config.json: HF PEFT 0.21's PeanutConfig fields.
#include <cmath>

#include "peft/peanut.h"
#include "tuners/config_fields.h"
#include "tuners/registry.h"
#include "util/json_file.h"

namespace peft {

namespace {

const ojson& peanut_defaults() {
  static const auto j = ojson::parse(R"({
    "act_fn": "relu", "auto_mapping": null, "base_model_name_or_path": null, "depth": 0, "exclude_modules": null,
    "inference_mode": true, "init_weights": true, "layers_pattern": null, "layers_to_transform": null,
    "modules_to_save": null, "peft_type": "PEANUT", "peft_version": "0.21.2", "r": 32, "revision": null,
    "scaling": 1.0, "target_modules": null, "task_type": null
  })");
  return j;
}

constexpr int64_t kMaxRank = int64_t{1} << 20;
constexpr int64_t kMaxDepth = 1024;

}  // namespace

PeanutConfig PeanutConfig::from_json(const ojson& j, const std::string& where, std::vector<std::string>* unknown) {
  PeanutConfig c;
  ConfigFields f(j, peanut_defaults(), "PEANUT", where, unknown, c);
  c.r = f.get<int64_t>("r");
  c.depth = f.get<int64_t>("depth");
  c.act_fn = f.get<std::string>("act_fn");
  c.scaling = f.get<double>("scaling");
  c.init_weights = f.get<bool>("init_weights");
  if (c.r <= 0 || c.r > kMaxRank) f.fail("'r' must be between 1 and 1048576, got " + std::to_string(c.r));
  if (c.depth < 0 || c.depth > kMaxDepth)
    f.fail("'depth' must be between 0 and 1024, got " + std::to_string(c.depth));
  if (!peanut_knows_activation(c.act_fn))
    f.fail("'act_fn' '" + c.act_fn +
           "' is not supported here (relu, gelu, gelu_new, gelu_pytorch_tanh, silu, tanh, sigmoid, linear, ...)");
  if (!std::isfinite(c.scaling)) f.fail("'scaling' must be finite");
  return c;
}

ojson PeanutConfig::to_json() const {
  ojson fields;
  fields["r"] = r;
  fields["depth"] = depth;
  fields["act_fn"] = act_fn;
  fields["scaling"] = scaling;
  fields["init_weights"] = init_weights;
  return config_json(*this, peanut_defaults(), fields);
}

namespace {
[[maybe_unused]] const bool kPeanutRegistered = register_method<PeanutConfig>("PEANUT");
}  // namespace

}  // namespace peft
