// SPARSE_FT's adapter_config.json (a format of ours, laid out as HF PEFT's configs are).
#include <cmath>

#include "peft/sparse_ft.h"
#include "tuners/config_fields.h"
#include "tuners/registry.h"

namespace peft {

namespace {

const ojson& sparse_ft_defaults() {
  static const auto j = ojson::parse(R"({
    "base_model_name_or_path": null, "calibration_samples": 64, "density": 0.01, "exclude_modules": null,
    "inference_mode": true, "init_weights": true, "layers_pattern": null, "layers_to_transform": null,
    "mask_type": "magnitude", "modules_to_save": null, "peft_type": "SPARSE_FT", "revision": null,
    "target_modules": null, "task_type": null
  })");
  return j;
}

}  // namespace

SparseFtConfig SparseFtConfig::from_json(const ojson& j, const std::string& where, std::vector<std::string>* unknown) {
  SparseFtConfig c;
  ConfigFields f(j, sparse_ft_defaults(), "SPARSE_FT", where, unknown, c);
  c.density = f.get<double>("density");
  if (!(c.density > 0.0 && c.density <= 1.0)) f.fail("'density' must be in (0, 1], got " + std::to_string(c.density));
  c.mask_type = f.get<std::string>("mask_type");
  if (c.mask_type != "random" && c.mask_type != "magnitude" && c.mask_type != "gradient")
    f.fail("'mask_type' must be \"random\", \"magnitude\" or \"gradient\", got \"" + c.mask_type + "\"");
  c.calibration_samples = f.get<int64_t>("calibration_samples");
  if (c.calibration_samples < 1)
    f.fail("'calibration_samples' must be a positive integer, got " + std::to_string(c.calibration_samples));
  c.init_weights = f.get<bool>("init_weights");
  return c;
}

ojson SparseFtConfig::to_json() const {
  ojson fields;
  fields["density"] = density;
  fields["mask_type"] = mask_type;
  fields["calibration_samples"] = calibration_samples;
  fields["init_weights"] = init_weights;
  return config_json(*this, sparse_ft_defaults(), fields);
}

int64_t SparseFtConfig::entries(int64_t out, int64_t in) const {
  const auto n = static_cast<int64_t>(std::llround(density * static_cast<double>(out) * static_cast<double>(in)));
  return std::min(out * in, std::max<int64_t>(1, n));
}

namespace {
[[maybe_unused]] const bool kSparseFtRegistered = register_method<SparseFtConfig>("SPARSE_FT");
}  // namespace

}  // namespace peft
