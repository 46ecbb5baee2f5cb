// AdaLoRA's adapter_config.json: HF PEFT 0.21's AdaLoraConfig (LoraConfig's fields plus
// the rank allocation schedule and the saved rank_pattern).
#include <cmath>

#include "peft/adalora.h"
#include "tuners/config_fields.h"
#include "tuners/registry.h"

namespace peft {

namespace {

const ojson& adalora_defaults() {
  static const auto j = ojson::parse(R"({
    "alora_invocation_tokens": null, "alpha_pattern": {}, "arrow_config": null, "auto_mapping": null,
    "base_model_name_or_path": null, "beta1": 0.85, "beta2": 0.85, "bias": "none", "corda_config": null,
    "deltaT": 1, "ensure_weight_tying": false, "eva_config": null, "exclude_modules": null, "fan_in_fan_out": false,
    "inference_mode": true, "init_lora_weights": true, "init_r": 12, "kasa_config": null, "layer_replication": null,
    "layers_pattern": null, "layers_to_transform": null, "loftq_config": {}, "lora_alpha": 8, "lora_bias": false,
    "lora_dropout": 0.0, "lora_ga_config": null, "megatron_config": null, "megatron_core": "megatron.core",
    "modules_to_save": null, "monteclora_config": null, "orth_reg_weight": 0.5, "peft_type": "ADALORA",
    "peft_version": "0.21.2", "qalora_group_size": 16, "r": 8, "rank_pattern": null, "revision": null,
    "target_modules": null, "target_parameters": null, "target_r": 8, "task_type": null, "tfinal": 0, "tinit": 0,
    "total_step": null, "trainable_token_indices": null, "use_bdlora": null, "use_dora": false, "use_qalora": false,
    "use_rslora": false, "velora_config": null
  })");
  return j;
}

// LoRA features AdaLoRA's layers do not have (HF refuses DoRA and LoftQ, and the rest
// select LoRA variants its SVDLinear never builds): refused rather than ignored.
const char* kUnsupportedUnlessDefault[] = {
    "alora_invocation_tokens", "arrow_config", "corda_config", "eva_config", "layer_replication", "lora_bias",
    "lora_ga_config", "megatron_config", "monteclora_config", "target_parameters", "trainable_token_indices",
    "use_bdlora", "use_qalora", "velora_config", "kasa_config", "use_dora", "loftq_config"};

bool is_default(const ojson& v, const ojson& d) {
  if (v.is_null() || v == d) return true;
  if (v.is_object() && v.empty() && d.is_null()) return true;
  return v == false && d.is_null();
}

std::map<std::string, std::vector<bool>> read_rank_pattern(const ConfigFields& f) {
  std::map<std::string, std::vector<bool>> out;
  const ojson& v = f.value("rank_pattern");
  if (!v.is_object()) f.fail("'rank_pattern' must be an object of module -> list of booleans, or null");
  for (const auto& [k, mask] : v.items()) {
    if (!mask.is_array()) f.fail("rank_pattern '" + k + "' must be a list of booleans");
    std::vector<bool> m;
    for (const auto& b : mask) m.push_back(strict_get<bool>(b, f.where() + ": rank_pattern '" + k + "' entries"));
    out[k] = std::move(m);
  }
  return out;
}

}  // namespace

AdaLoraConfig AdaLoraConfig::from_json(const ojson& j, const std::string& where, std::vector<std::string>* unknown) {
  AdaLoraConfig c;
  ConfigFields f(j, adalora_defaults(), "ADALORA", where, unknown, c);
  for (const char* u : kUnsupportedUnlessDefault)
    if (j.contains(u) && !is_default(j[u], adalora_defaults()[u]))
      f.fail("'" + std::string(u) + "' = " + quote_json(j[u]) + " is not supported by AdaLoRA");
  c.init_r = f.get<int64_t>("init_r");
  c.target_r = f.get<int64_t>("target_r");
  c.tinit = f.get<int64_t>("tinit");
  c.tfinal = f.get<int64_t>("tfinal");
  c.deltaT = f.get<int64_t>("deltaT");
  c.total_step = f.is_null("total_step") ? 0 : f.get<int64_t>("total_step");
  c.beta1 = f.get<double>("beta1");
  c.beta2 = f.get<double>("beta2");
  c.orth_reg_weight = f.get<double>("orth_reg_weight");
  c.lora_alpha = f.get<double>("lora_alpha");
  c.lora_dropout = f.get<double>("lora_dropout");
  c.r = f.get<int64_t>("r");
  c.bias = f.get<std::string>("bias");
  c.fan_in_fan_out = f.get<bool>("fan_in_fan_out");
  if (!f.value("init_lora_weights").is_boolean())
    f.fail("'init_lora_weights' must be true or false for AdaLoRA, got " + quote_json(f.value("init_lora_weights")));
  c.init_lora_weights = f.get<bool>("init_lora_weights");
  c.has_rank_pattern = !f.is_null("rank_pattern");
  if (c.has_rank_pattern) c.rank_pattern = read_rank_pattern(f);

  if (c.init_r < 0 || c.init_r > (int64_t{1} << 20)) f.fail("'init_r' must be between 0 and 1048576");
  if (c.target_r < 0 || c.target_r > c.init_r)
    f.fail("'target_r' must be between 0 and init_r (" + std::to_string(c.init_r) + "), got " + std::to_string(c.target_r));
  if (c.tinit < 0 || c.tfinal < 0) f.fail("'tinit' and 'tfinal' must be >= 0");
  if (c.deltaT < 1) f.fail("'deltaT' must be >= 1, got " + std::to_string(c.deltaT));
  if (!f.is_null("total_step") && c.total_step <= 0)
    f.fail("'total_step' must be > 0 (AdaLoRA's schedule needs the number of training steps)");
  for (const auto& [name, b] : {std::pair{"beta1", c.beta1}, {"beta2", c.beta2}})
    if (!(b > 0 && b < 1)) f.fail("'" + std::string(name) + "' must be in (0, 1), got " + std::to_string(b));
  if (!(c.orth_reg_weight >= 0) || !std::isfinite(c.orth_reg_weight)) f.fail("'orth_reg_weight' must be >= 0");
  if (!std::isfinite(c.lora_alpha)) f.fail("'lora_alpha' must be finite");
  if (!(c.lora_dropout >= 0 && c.lora_dropout < 1)) f.fail("'lora_dropout' must be in [0, 1)");
  if (c.bias != "none" && c.bias != "all" && c.bias != "lora_only")
    f.fail("'bias' must be none, all or lora_only, got '" + c.bias + "'");
  if (c.targets.target_regex && !c.targets.layers_to_transform.empty())
    f.fail("'layers_to_transform' cannot be used when 'target_modules' is a regex string");
  if (!c.targets.layers_pattern.empty() && c.targets.layers_to_transform.empty())
    f.fail("'layers_pattern' needs 'layers_to_transform'");
  if (c.total_step > 0) c.check_schedule(where);
  return c;
}

void AdaLoraConfig::check_schedule(const std::string& where) const {
  if (tinit >= total_step - tfinal)
    throw std::runtime_error(where + ": AdaLoRA's 'tinit' (" + std::to_string(tinit) + ") must be below 'total_step' - " +
                             "'tfinal' (" + std::to_string(total_step) + " - " + std::to_string(tfinal) +
                             "), or there is no budgeting phase");
}

ojson AdaLoraConfig::to_json() const {
  ojson fields;
  for (const auto& [k, v] : {std::pair{"init_r", init_r}, {"target_r", target_r}, {"tinit", tinit},
                             {"tfinal", tfinal}, {"deltaT", deltaT}, {"r", r}})
    fields[k] = v;
  fields["total_step"] = total_step > 0 ? ojson(total_step) : ojson();
  fields["beta1"] = beta1;
  fields["beta2"] = beta2;
  fields["orth_reg_weight"] = orth_reg_weight;
  if (lora_alpha == std::floor(lora_alpha) && std::abs(lora_alpha) < 1e15) fields["lora_alpha"] = static_cast<int64_t>(lora_alpha);
  else fields["lora_alpha"] = lora_alpha;
  fields["lora_dropout"] = lora_dropout;
  fields["bias"] = bias;
  fields["fan_in_fan_out"] = fan_in_fan_out;
  fields["init_lora_weights"] = init_lora_weights;
  if (has_rank_pattern) {
    ojson rp = ojson::object();
    for (const auto& [k, mask] : rank_pattern) rp[k] = mask;
    fields["rank_pattern"] = rp;
  } else {
    fields["rank_pattern"] = nullptr;
  }
  return config_json(*this, adalora_defaults(), fields);
}

std::unique_ptr<AdapterConfig> AdaLoraConfig::for_loading() const {
  auto c = std::make_unique<AdaLoraConfig>(*this);
  c->size_by_rank_pattern_ = true;
  return c;
}

namespace {
[[maybe_unused]] const bool kAdaLoraRegistered = register_method<AdaLoraConfig>("ADALORA");
}  // namespace

}  // namespace peft
