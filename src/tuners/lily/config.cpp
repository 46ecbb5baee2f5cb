// LILY's adapter_config.json: HF PEFT 0.21's LilyConfig fields.
#include <cmath>

#include "peft/lily.h"
#include "tuners/config_fields.h"
#include "tuners/registry.h"
#include "util/json_file.h"

namespace peft {

namespace {

const ojson& lily_defaults() {
  static const auto j = ojson::parse(R"({
    "auto_mapping": null, "base_model_name_or_path": null, "exclude_modules": null, "inference_mode": true,
    "init_weights": true, "layers_pattern": null, "layers_to_transform": null, "modules_to_save": null, "num_B": 2,
    "peft_type": "LILY", "peft_version": "0.21.2", "r": 32, "revision": null, "scaling": 1.0, "stride_A": 1,
    "target_modules": null, "task_type": null
  })");
  return j;
}

}  // namespace

LilyConfig LilyConfig::from_json(const ojson& j, const std::string& where, std::vector<std::string>* unknown) {
  LilyConfig c;
  ConfigFields f(j, lily_defaults(), "LILY", where, unknown, c);
  c.r = f.get<int64_t>("r");
  c.scaling = f.get<double>("scaling");
  c.stride_A = f.get<int64_t>("stride_A");
  c.num_B = f.get<int64_t>("num_B");
  c.init_weights = f.get<bool>("init_weights");
  if (c.r <= 0 || c.r > (int64_t{1} << 20)) f.fail("'r' must be between 1 and 1048576, got " + std::to_string(c.r));
  if (c.stride_A < 1) f.fail("'stride_A' must be at least 1, got " + std::to_string(c.stride_A));
  if (c.num_B < 2 || c.num_B > 4096)
    f.fail("'num_B' must be between 2 and 4096 (the router needs two experts), got " + std::to_string(c.num_B));
  if (!std::isfinite(c.scaling)) f.fail("'scaling' must be finite");
  if (!c.targets.layers_pattern.empty() && c.targets.layers_to_transform.empty())
    f.fail("'layers_pattern' needs 'layers_to_transform'");
  return c;
}

ojson LilyConfig::to_json() const {
  ojson fields;
  fields["r"] = r;
  fields["scaling"] = scaling;
  fields["stride_A"] = stride_A;
  fields["num_B"] = num_B;
  fields["init_weights"] = init_weights;
  return config_json(*this, lily_defaults(), fields);
}

namespace {
[[maybe_unused]] const bool kLilyRegistered = register_method<LilyConfig>("LILY");
}  // namespace

}  // namespace peft
