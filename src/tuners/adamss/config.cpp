// ADAMSS's adapter_config.json: HF PEFT 0.21's AdamssConfig fields.
#include <cmath>

#include "peft/adamss.h"
#include "tuners/config_fields.h"
#include "tuners/registry.h"
#include "tuners/seed_field.h"

namespace peft {

namespace {

const ojson& adamss_defaults() {
  static const auto j = ojson::parse(R"({
    "asa_importance_beta": 0.85, "asa_schedule_exponent": 3.0, "asa_target_subspaces": 50,
    "asa_uncertainty_beta": 0.85, "auto_mapping": null, "base_model_name_or_path": null, "exclude_modules": null,
    "final_warmup": 1000, "inference_mode": true, "init_warmup": 50, "init_weights": "orthogonal",
    "layers_pattern": null, "layers_to_transform": null, "mask_interval": 100, "modules_to_save": null,
    "num_subspaces": 5, "peft_type": "ADAMSS", "peft_version": "0.21.2", "r": 100, "random_seed": 0,
    "revision": null, "subspace_rank": 1, "svd_threshold": 0.1, "target_modules": null, "task_type": null,
    "use_asa": false, "use_dynamic_rank": false
  })");
  return j;
}

}  // namespace

AdamssConfig AdamssConfig::from_json(const ojson& j, const std::string& where, std::vector<std::string>* unknown) {
  AdamssConfig c;
  ConfigFields f(j, adamss_defaults(), "ADAMSS", where, unknown, c);
  c.r = f.get<int64_t>("r");
  c.num_subspaces = f.get<int64_t>("num_subspaces");
  c.subspace_rank = f.get<int64_t>("subspace_rank");
  // HF: False counts as None; anything else but "orthogonal" is refused.
  const ojson& iw = f.value("init_weights");
  if (iw.is_null() || (iw.is_boolean() && !iw.get<bool>()))
    c.init_weights.reset();
  else if (iw.is_string() && iw.get<std::string>() == "orthogonal")
    c.init_weights = "orthogonal";
  else
    f.fail("'init_weights' must be 'orthogonal' or null, got " + iw.dump());
  c.use_asa = f.get<bool>("use_asa");
  c.asa_target_subspaces = f.get<int64_t>("asa_target_subspaces");
  c.init_warmup = f.get<int64_t>("init_warmup");
  c.final_warmup = f.get<int64_t>("final_warmup");
  c.mask_interval = f.get<int64_t>("mask_interval");
  c.asa_importance_beta = f.get<double>("asa_importance_beta");
  c.asa_uncertainty_beta = f.get<double>("asa_uncertainty_beta");
  c.asa_schedule_exponent = f.get<double>("asa_schedule_exponent");
  c.use_dynamic_rank = f.get<bool>("use_dynamic_rank");
  c.svd_threshold = f.get<double>("svd_threshold");
  c.random_seed = torch_seed_field(f, "random_seed");
  // HF has no checks of its own on these (a zero r or K fails deep in torch or sklearn).
  if (c.r <= 0) f.fail("'r' must be a positive integer, got " + std::to_string(c.r));
  if (c.num_subspaces <= 0) f.fail("'num_subspaces' must be a positive integer, got " + std::to_string(c.num_subspaces));
  if (c.subspace_rank <= 0) f.fail("'subspace_rank' must be a positive integer, got " + std::to_string(c.subspace_rank));
  if (!std::isfinite(c.svd_threshold)) f.fail("'svd_threshold' must be finite");
  if (c.use_asa) {  // HF's __post_init__ checks
    if (c.mask_interval <= 0)
      f.fail("'mask_interval' must be a positive integer when 'use_asa' is true, got " + std::to_string(c.mask_interval));
    if (c.init_warmup >= c.final_warmup)
      f.fail("'init_warmup' must be smaller than 'final_warmup' when 'use_asa' is true, got " +
             std::to_string(c.init_warmup) + " and " + std::to_string(c.final_warmup));
    if (c.asa_target_subspaces <= 0)
      f.fail("'asa_target_subspaces' must be a positive integer when 'use_asa' is true, got " +
             std::to_string(c.asa_target_subspaces));
    if (!(c.asa_schedule_exponent > 0))
      f.fail("'asa_schedule_exponent' must be a positive number when 'use_asa' is true");
  }
  if (!c.targets.layers_pattern.empty() && c.targets.layers_to_transform.empty())
    f.fail("'layers_pattern' needs 'layers_to_transform'");
  return c;
}

ojson AdamssConfig::to_json() const {
  ojson fields;
  fields["r"] = r;
  fields["num_subspaces"] = num_subspaces;
  fields["subspace_rank"] = subspace_rank;
  fields["init_weights"] = init_weights ? ojson(*init_weights) : ojson();
  fields["use_asa"] = use_asa;
  fields["asa_target_subspaces"] = asa_target_subspaces;
  fields["init_warmup"] = init_warmup;
  fields["final_warmup"] = final_warmup;
  fields["mask_interval"] = mask_interval;
  fields["asa_importance_beta"] = asa_importance_beta;
  fields["asa_uncertainty_beta"] = asa_uncertainty_beta;
  fields["asa_schedule_exponent"] = asa_schedule_exponent;
  fields["use_dynamic_rank"] = use_dynamic_rank;
  fields["svd_threshold"] = svd_threshold;
  fields["random_seed"] = torch_seed_json(random_seed);
  return config_json(*this, adamss_defaults(), fields);
}

namespace {
[[maybe_unused]] const bool kAdamssRegistered = register_method<AdamssConfig>("ADAMSS");
}  // namespace

}  // namespace peft
