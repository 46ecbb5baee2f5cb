// PSOFT's adapter_config.json: HF PEFT 0.21's PsoftConfig fields.
#include <cmath>

#include "peft/psoft.h"
#include "tuners/config_fields.h"
#include "tuners/registry.h"
#include "tuners/seed_field.h"

namespace peft {

namespace {

const ojson& psoft_defaults() {
  static const auto j = ojson::parse(R"({
    "ab_svd_init": "psoft_init", "auto_mapping": null, "base_model_name_or_path": null,
    "cayley_neumann_eps": null, "exclude_modules": null, "fan_in_fan_out": false, "inference_mode": true,
    "init_weights": true, "layers_pattern": null, "layers_to_transform": null, "modules_to_save": null,
    "num_cayley_neumann_terms": 5, "peft_type": "PSOFT", "peft_version": "0.21.2", "psoft_alpha": 32,
    "psoft_dropout": 0.0, "psoft_mag_a": true, "psoft_mag_b": true, "psoft_orth": true, "psoft_svd": "full",
    "psoft_svd_lowrank_niter": 10, "r": 32, "random_seed": 0, "revision": null, "target_modules": null,
    "task_type": null, "use_cayley_neumann": false
  })");
  return j;
}

}  // namespace

PsoftConfig PsoftConfig::from_json(const ojson& j, const std::string& where, std::vector<std::string>* unknown) {
  PsoftConfig c;
  ConfigFields f(j, psoft_defaults(), "PSOFT", where, unknown, c);
  c.r = f.get<int64_t>("r");
  c.psoft_alpha = f.get<double>("psoft_alpha");
  c.psoft_dropout = f.get<double>("psoft_dropout");
  c.fan_in_fan_out = f.get<bool>("fan_in_fan_out");
  c.ab_svd_init = f.get<std::string>("ab_svd_init");
  c.psoft_svd = f.get<std::string>("psoft_svd");
  c.psoft_svd_lowrank_niter = f.get<int64_t>("psoft_svd_lowrank_niter");
  c.random_seed = torch_seed_field(f, "random_seed");
  c.psoft_orth = f.get<bool>("psoft_orth");
  c.psoft_mag_b = f.get<bool>("psoft_mag_b");
  c.psoft_mag_a = f.get<bool>("psoft_mag_a");
  c.use_cayley_neumann = f.get<bool>("use_cayley_neumann");
  c.num_cayley_neumann_terms = f.get<int64_t>("num_cayley_neumann_terms");
  if (!f.is_null("cayley_neumann_eps")) c.cayley_neumann_eps = f.get<double>("cayley_neumann_eps");
  c.init_weights = f.get<bool>("init_weights");
  if (c.r <= 0) f.fail("'r' must be a positive integer, got " + std::to_string(c.r));
  if (!std::isfinite(c.psoft_alpha)) f.fail("'psoft_alpha' must be finite");
  if (!(c.psoft_dropout >= 0.0 && c.psoft_dropout < 1.0))
    f.fail("'psoft_dropout' must be in [0, 1), got " + std::to_string(c.psoft_dropout));
  if (c.ab_svd_init != "psoft_init" && c.ab_svd_init != "pissa_init")
    f.fail("'ab_svd_init' must be psoft_init or pissa_init, got '" + c.ab_svd_init + "'");
  if (c.psoft_svd != "full" && c.psoft_svd != "lowrank")
    f.fail("'psoft_svd' must be full or lowrank, got '" + c.psoft_svd + "'");
  if (c.psoft_svd_lowrank_niter < 0 || c.psoft_svd_lowrank_niter > 1000)
    f.fail("'psoft_svd_lowrank_niter' must be in [0, 1000], got " + std::to_string(c.psoft_svd_lowrank_niter));
  if (c.use_cayley_neumann) {
    if (c.num_cayley_neumann_terms <= 0 || c.num_cayley_neumann_terms > 64)
      f.fail("'num_cayley_neumann_terms' must be in [1, 64], got " + std::to_string(c.num_cayley_neumann_terms));
    if (c.cayley_neumann_eps && !(*c.cayley_neumann_eps > 0.0 && *c.cayley_neumann_eps < 1.0))
      f.fail("'cayley_neumann_eps' must be in (0, 1) when set, got " + std::to_string(*c.cayley_neumann_eps));
  }
  if (!c.targets.layers_pattern.empty() && c.targets.layers_to_transform.empty())
    f.fail("'layers_pattern' needs 'layers_to_transform'");
  return c;
}

ojson PsoftConfig::to_json() const {
  ojson fields;
  fields["r"] = r;
  // An integer alpha stays an integer, as HF writes it.
  if (std::trunc(psoft_alpha) == psoft_alpha && std::abs(psoft_alpha) < 1e15)
    fields["psoft_alpha"] = static_cast<int64_t>(psoft_alpha);
  else
    fields["psoft_alpha"] = psoft_alpha;
  fields["psoft_dropout"] = psoft_dropout;
  fields["fan_in_fan_out"] = fan_in_fan_out;
  fields["ab_svd_init"] = ab_svd_init;
  fields["psoft_svd"] = psoft_svd;
  fields["psoft_svd_lowrank_niter"] = psoft_svd_lowrank_niter;
  fields["random_seed"] = torch_seed_json(random_seed);
  fields["psoft_orth"] = psoft_orth;
  fields["psoft_mag_b"] = psoft_mag_b;
  fields["psoft_mag_a"] = psoft_mag_a;
  fields["use_cayley_neumann"] = use_cayley_neumann;
  fields["num_cayley_neumann_terms"] = num_cayley_neumann_terms;
  fields["cayley_neumann_eps"] = cayley_neumann_eps ? ojson(*cayley_neumann_eps) : ojson();
  fields["init_weights"] = init_weights;
  return config_json(*this, psoft_defaults(), fields);
}

namespace {
[[maybe_unused]] const bool kPsoftRegistered = register_method<PsoftConfig>("PSOFT");
}  // namespace

}  // namespace peft
