// OSF's adapter_config.json: HF PEFT 0.21's OSFConfig fields.
#include <cmath>

#include "peft/osf.h"
#include "tuners/config_fields.h"
#include "tuners/registry.h"
#include "util/json_file.h"
#include "util/regex.h"

namespace peft {

namespace {

const ojson& osf_defaults() {
  static const auto j = ojson::parse(R"({
    "auto_mapping": null, "base_model_name_or_path": null, "effective_rank": null, "inference_mode": true,
    "init_weights": true, "modules_to_save": null, "peft_type": "OSF", "peft_version": "0.21.2",
    "rank_pattern": null, "revision": null, "target_modules": null, "target_svd_config": null, "task_type": null
  })");
  return j;
}

// A count (int) or a fraction / count (float); never a bool, and positive, since HF's
// update_layer refuses a preserved rank of 0.
OsfRank read_rank(const ojson& v, const std::string& what) {
  if (!v.is_number()) throw std::runtime_error(what + " must be a number, got " + quote_json(v));
  OsfRank r{v.get<double>(), v.is_number_float()};
  if (!(r.value > 0) || !std::isfinite(r.value))
    throw std::runtime_error(what + " must be a positive count or a fraction in (0, 1], got " + quote_json(v));
  return r;
}

ojson rank_json(const OsfRank& r) {
  if (r.is_float) return r.value;
  return static_cast<int64_t>(r.value);
}

}  // namespace

int64_t OsfRank::resolve(int64_t min_dim) const {
  const double r = is_float && value > 0 && value <= 1 ? std::trunc(static_cast<double>(min_dim) * value)
                                                       : std::trunc(value);
  return std::max<int64_t>(static_cast<int64_t>(std::min(static_cast<double>(min_dim), r)), 0);
}

OsfConfig OsfConfig::from_json(const ojson& j, const std::string& where, std::vector<std::string>* unknown) {
  OsfConfig c;
  ConfigFields f(j, osf_defaults(), "OSF", where, unknown, c);
  if (!f.is_null("effective_rank")) c.effective_rank = read_rank(f.value("effective_rank"), where + ": 'effective_rank'");
  const ojson& rp = f.value("rank_pattern");
  if (!rp.is_null()) {
    if (!rp.is_object()) f.fail("'rank_pattern' must be an object");
    for (const auto& [k, v] : rp.items()) {
      Regex check(k);
      c.rank_pattern.emplace_back(k, read_rank(v, where + ": rank_pattern '" + k + "'"));
    }
  }
  if (!f.is_null("init_weights")) c.init_weights = f.get<bool>("init_weights");  // null: HF's SVD init too
  const ojson& svd = f.value("target_svd_config");  // accepted and ignored, as HF does
  if (!svd.is_null() && !svd.is_object()) f.fail("'target_svd_config' must be an object or null");
  return c;
}

ojson OsfConfig::to_json() const {
  ojson fields;
  fields["effective_rank"] = effective_rank ? rank_json(*effective_rank) : ojson();
  if (rank_pattern.empty()) {  // {} stays {}
    fields["rank_pattern"] = source.contains("rank_pattern") && source["rank_pattern"].is_object() ? ojson::object()
                                                                                                  : ojson();
  } else {
    ojson rp = ojson::object();
    for (const auto& [k, v] : rank_pattern) rp[k] = rank_json(v);
    fields["rank_pattern"] = rp;
  }
  fields["init_weights"] = init_weights;
  return config_json(*this, osf_defaults(), fields);
}

namespace {
[[maybe_unused]] const bool kOsfRegistered = register_method<OsfConfig>("OSF");
}  // namespace

}  // namespace peft
