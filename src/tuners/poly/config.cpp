// Poly's adapter_config.json: HF PEFT 0.21's PolyConfig fields.
#include "peft/poly.h"
#include "tuners/config_fields.h"
#include "tuners/registry.h"

namespace peft {

namespace {

const ojson& poly_defaults() {
  static const auto j = ojson::parse(R"({
    "auto_mapping": null, "base_model_name_or_path": null, "exclude_modules": null, "inference_mode": true,
    "init_weights": true, "modules_to_save": null, "n_skills": 4, "n_splits": 1, "n_tasks": 1, "peft_type": "POLY",
    "peft_version": "0.21.2", "poly_type": "poly", "r": 8, "revision": null, "target_modules": null, "task_type": null
  })");
  return j;
}

}  // namespace

PolyConfig PolyConfig::from_json(const ojson& j, const std::string& where, std::vector<std::string>* unknown) {
  PolyConfig c;
  ConfigFields f(j, poly_defaults(), "POLY", where, unknown, c);
  for (auto [key, dst] : {std::pair{"r", &c.r}, std::pair{"n_tasks", &c.n_tasks}, std::pair{"n_skills", &c.n_skills},
                          std::pair{"n_splits", &c.n_splits}}) {
    *dst = f.get<int64_t>(key);
    if (*dst <= 0) f.fail(std::string("'") + key + "' must be positive, got " + std::to_string(*dst));
  }
  c.init_weights = f.get<bool>("init_weights");
  if (f.get<std::string>("poly_type") != "poly")
    f.fail("poly_type must be 'poly' (HF PEFT's only router), got '" + f.get<std::string>("poly_type") + "'");
  return c;
}

ojson PolyConfig::to_json() const {
  ojson fields;
  fields["r"] = r;
  fields["n_tasks"] = n_tasks;
  fields["n_skills"] = n_skills;
  fields["n_splits"] = n_splits;
  fields["init_weights"] = init_weights;
  return config_json(*this, poly_defaults(), fields);
}

namespace {
[[maybe_unused]] const bool kPolyRegistered = register_method<PolyConfig>("POLY");
}  // namespace

}  // namespace peft
