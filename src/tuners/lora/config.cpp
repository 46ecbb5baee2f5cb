#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <stdexcept>

#include "tuners/registry.h"
#include "peft/layers.h"
#include "peft/lora.h"
#include "tuners/config_fields.h"
#include "tuners/injection.h"
#include "tuners/pattern_key.h"
#include "tuners/target_match.h"
#include "tuners/trainable_tokens/plan.h"
#include "util/regex.h"
#include "util/suggest.h"

namespace peft {

namespace {

// Every field HF PEFT 0.21 writes for LoRA, with its default. Saving starts from this so
// files carry all keys HF expects; loading treats other keys as unknown.
const ojson& lora_defaults() {
  static const auto j = ojson::parse(R"({
    "alora_invocation_tokens": null, "alpha_pattern": {}, "arrow_config": null, "auto_mapping": null,
    "base_model_name_or_path": null, "bias": "none", "corda_config": null, "ensure_weight_tying": false,
    "eva_config": null, "exclude_modules": null, "fan_in_fan_out": false, "inference_mode": true,
    "init_lora_weights": true, "kasa_config": null, "layer_replication": null, "layers_pattern": null,
    "layers_to_transform": null, "loftq_config": {}, "lora_alpha": 8, "lora_bias": false, "lora_dropout": 0.0,
    "lora_ga_config": null, "megatron_config": null, "megatron_core": "megatron.core", "modules_to_save": null,
    "monteclora_config": null, "peft_type": "LORA", "peft_version": "0.21.2", "qalora_group_size": 16, "r": 8,
    "rank_pattern": {}, "revision": null, "target_modules": null, "target_parameters": null, "task_type": null,
    "trainable_token_indices": null, "use_bdlora": null, "use_dora": false, "use_qalora": false,
    "use_rslora": false, "velora_config": null
  })");
  return j;
}

// Fields whose non-default values select features we do not implement: refuse them
// rather than compute something else.
const char* kUnsupportedUnlessDefault[] = {
    "alora_invocation_tokens", "arrow_config", "layer_replication",
    "megatron_config", "monteclora_config",
    "use_bdlora", "use_qalora", "velora_config", "kasa_config"};

// HF's LoftQConfig: loftq_bits (4; its int8 variant is not implemented here) and
// loftq_iter (1); LoraConfig requires one with init_lora_weights "loftq".
void read_loftq_config(const ojson& q, ConfigFields& f, LoraConfig& c) {
  if (!q.is_object() || q.empty()) f.fail("init_lora_weights 'loftq' needs a 'loftq_config', e.g. {\"loftq_bits\": 4, \"loftq_iter\": 1}");
  for (const auto& [k, v] : q.items()) {
    if (k == "loftq_bits") {
      if (!v.is_number_integer() || v.get<int64_t>() != 4) f.fail("loftq_config 'loftq_bits' must be 4 (NF4), got " + quote_json(v));
    } else if (k == "loftq_iter") {
      if (!v.is_number_integer() || v.get<int64_t>() < 1 || v.get<int64_t>() > 100)
        f.fail("loftq_config 'loftq_iter' must be an integer in [1, 100], got " + quote_json(v));
      c.loftq_iter = v.get<int64_t>();
    } else {
      f.fail("loftq_config has an unknown key '" + k + "' (loftq_bits, loftq_iter)");
    }
  }
}

// HF's CordaConfig: corda_method ("ipm" or "kpm"); the calibration runs here, so its
// torch.save cache and covariance files are refused, as is the fp16 covariance.
void read_corda_config(const ojson& q, ConfigFields& f, LoraConfig& c) {
  if (q.is_null()) return;  // HF's default CordaConfig
  if (!q.is_object()) f.fail("'corda_config' must be an object");
  for (const auto& [k, v] : q.items()) {
    if (k == "corda_method") {
      if (v != "ipm" && v != "kpm") f.fail("corda_config 'corda_method' must be ipm or kpm, got " + quote_json(v));
      c.corda_method = v.get<std::string>();
    } else if (k == "cache_file" || k == "covariance_file") {
      if (!v.is_null()) f.fail("corda_config '" + k + "' (a torch.save file) is not supported; peft train calibrates on the training file");
    } else if (k == "use_float16_for_covariance") {
      if (v != false) f.fail("corda_config 'use_float16_for_covariance' is not supported");
    } else if (k != "verbose" && k != "prune_temporary_fields") {
      f.fail("corda_config has an unknown key '" + k + "'");
    }
  }
}

// HF's LoraGAConfig: direction, scale, stable_gamma.
void read_lora_ga_config(const ojson& q, ConfigFields& f, LoraConfig& c) {
  if (q.is_null()) return;  // HF's default LoraGAConfig
  if (!q.is_object()) f.fail("'lora_ga_config' must be an object");
  for (const auto& [k, v] : q.items()) {
    if (k == "direction") {
      if (v != "ArBr" && v != "A2rBr" && v != "ArB2r" && v != "random")
        f.fail("lora_ga_config 'direction' must be ArBr, A2rBr, ArB2r or random, got " + quote_json(v));
      c.lora_ga_direction = v.get<std::string>();
    } else if (k == "scale") {
      if (v != "stable" && v != "weight_svd" && v != "gd_scale" && v != "unit")
        f.fail("lora_ga_config 'scale' must be stable, weight_svd, gd_scale or unit, got " + quote_json(v));
      c.lora_ga_scale = v.get<std::string>();
    } else if (k == "stable_gamma") {
      if (!v.is_number_integer() || v.get<int64_t>() <= 0)
        f.fail("lora_ga_config 'stable_gamma' must be a positive integer, got " + quote_json(v));
      c.lora_ga_stable_gamma = v.get<int64_t>();
    } else {
      f.fail("lora_ga_config has an unknown key '" + k + "' (direction, scale, stable_gamma)");
    }
  }
}

// HF's EvaConfig (rho >= 1, tau in [0, 1]); null is its default.
void read_eva_config(const ojson& q, ConfigFields& f, LoraConfig& c) {
  if (q.is_null()) return;
  if (!q.is_object()) f.fail("'eva_config' must be an object");
  auto& e = c.eva;
  for (const auto& [k, v] : q.items()) {
    const std::string what = "eva_config '" + k + "'";
    if (k == "rho" || k == "tau") {
      if (!v.is_number()) f.fail(what + " must be a number, got " + quote_json(v));
      const double x = v.get<double>();
      if (k == "rho" && !(x >= 1.0 && x <= 1e6)) f.fail(what + " must be >= 1.0 (and at most 1e6), got " + quote_json(v));
      if (k == "tau" && !(x >= 0.0 && x <= 1.0)) f.fail(what + " must be between 0.0 and 1.0, got " + quote_json(v));
      (k == "rho" ? e.rho : e.tau) = x;
    } else if (k == "use_label_mask" || k == "whiten" || k == "adjust_scaling_factors") {
      if (!v.is_boolean()) f.fail(what + " must be true or false, got " + quote_json(v));
      (k == "use_label_mask" ? e.use_label_mask : k == "whiten" ? e.whiten : e.adjust_scaling_factors) = v.get<bool>();
    } else if (k == "label_mask_value") {
      if (!v.is_number_integer()) f.fail(what + " must be an integer, got " + quote_json(v));
      e.label_mask_value = v.get<int64_t>();
    } else {
      f.fail("eva_config has an unknown key '" + k +
             "' (rho, tau, use_label_mask, label_mask_value, whiten, adjust_scaling_factors)");
    }
  }
}

bool is_default(const ojson& v, const ojson& d) {
  if (v.is_null() || v == d) return true;
  if (v.is_object() && v.empty() && d.is_null()) return true;
  return v == false && d.is_null();
}

}  // namespace

LoraConfig LoraConfig::from_json(const ojson& j, const std::string& where, std::vector<std::string>* unknown_keys) {
  LoraConfig c;
  std::vector<std::string> extra;
  ConfigFields f(j, lora_defaults(), "LORA", where, &extra, c);
  for (const auto& k : extra)
    if (k != "lora_fa" && unknown_keys) unknown_keys->push_back(k);
  for (const char* u : kUnsupportedUnlessDefault)
    if (j.contains(u) && !is_default(j[u], lora_defaults()[u]))
      f.fail("'" + std::string(u) + "' = " + quote_json(j[u]) + " is not supported");
  c.r = f.get<int64_t>("r");
  c.lora_alpha = f.get<double>("lora_alpha");
  c.lora_dropout = f.get<double>("lora_dropout");
  c.bias = f.get<std::string>("bias");
  c.fan_in_fan_out = f.get<bool>("fan_in_fan_out");
  c.use_rslora = f.get<bool>("use_rslora");
  c.use_dora = f.get<bool>("use_dora");
  c.lora_bias = f.get<bool>("lora_bias");
  c.lora_fa = j.contains("lora_fa") && strict_get<bool>(j["lora_fa"], where + ": 'lora_fa'");
  const ojson& init = f.value("init_lora_weights");
  c.init_lora_weights = init.is_boolean() ? (init.get<bool>() ? "true" : "false")
                                          : strict_get<std::string>(init, where + ": 'init_lora_weights'");
  for (const char* key : {"rank_pattern", "alpha_pattern"})
    if (!f.value(key).is_null() && !f.value(key).is_object()) f.fail("'" + std::string(key) + "' must be an object");
  for (const auto& [k, v] : f.value("rank_pattern").items())
    c.rank_pattern.emplace_back(k, strict_get<int64_t>(v, where + ": rank_pattern '" + k + "'"));
  for (const auto& [k, v] : f.value("alpha_pattern").items())
    c.alpha_pattern.emplace_back(k, strict_get<double>(v, where + ": alpha_pattern '" + k + "'"));

  auto check_rank = [&](int64_t r, const std::string& what) {
    if (r < 1 || r > (int64_t{1} << 20)) f.fail(what + " must be between 1 and 1048576, got " + std::to_string(r));
  };
  check_rank(c.r, "'r'");
  for (const auto& [k, r] : c.rank_pattern) check_rank(r, "rank_pattern '" + k + "'");
  if (!std::isfinite(c.lora_alpha)) f.fail("'lora_alpha' must be finite");
  for (const auto& [k, a] : c.alpha_pattern)
    if (!std::isfinite(a)) f.fail("alpha_pattern '" + k + "' must be finite");
  if (!(c.lora_dropout >= 0 && c.lora_dropout < 1)) f.fail("'lora_dropout' must be in [0, 1)");
  if (c.bias != "none" && c.bias != "all" && c.bias != "lora_only")
    f.fail("'bias' must be none, all or lora_only, got '" + c.bias + "'");
  static const std::vector<std::string> inits = {"true",  "false",      "gaussian", "pissa",
                                                 "olora", "loftq", "orthogonal", "corda", "lora_ga", "eva"};
  const std::string& iw = c.init_lora_weights;  // pissa_niter_N: N subspace iterations, 0 to 999
  const bool pissa_niter = iw.rfind("pissa_niter_", 0) == 0 && iw.size() > 12 && iw.size() <= 15 &&
                           iw.find_first_not_of("0123456789", 12) == std::string::npos;
  if (!pissa_niter && std::find(inits.begin(), inits.end(), c.init_lora_weights) == inits.end())
    f.fail("init_lora_weights '" + c.init_lora_weights +
           "' is not supported (true, false, gaussian, pissa, pissa_niter_N, olora, loftq, orthogonal, corda, lora_ga, "
           "eva)" +
           did_you_mean(c.init_lora_weights, inits));
  if (c.init_lora_weights == "loftq") read_loftq_config(f.value("loftq_config"), f, c);
  if (c.init_lora_weights == "corda") read_corda_config(f.value("corda_config"), f, c);
  if (c.lora_bias && c.init_lora_weights != "true" && c.init_lora_weights != "false")
    f.fail("lora_bias is only supported with init_lora_weights true or false (as HF PEFT), got '" +
           c.init_lora_weights + "'");
  if (c.lora_bias && c.use_dora) f.fail("lora_bias is not supported with DoRA (as HF PEFT)");
  if (c.init_lora_weights == "lora_ga") read_lora_ga_config(f.value("lora_ga_config"), f, c);
  if (c.init_lora_weights == "eva") read_eva_config(f.value("eva_config"), f, c);  // HF ignores it otherwise
  if (const ojson& tp = f.value("target_parameters"); !tp.is_null()) {
    if (!tp.is_array()) f.fail("'target_parameters' must be a list of parameter names");
    c.target_parameters.emplace();
    for (const auto& v : tp) c.target_parameters->push_back(strict_get<std::string>(v, where + ": target_parameters"));
  }
  for (const auto& [k, _] : c.rank_pattern) Regex check(k);
  for (const auto& [k, _] : c.alpha_pattern) Regex check(k);
  c.trainable_token_indices = f.value("trainable_token_indices");
  try {
    check_token_indices_spec(c.trainable_token_indices, "'trainable_token_indices'");
  } catch (const std::invalid_argument& e) {
    f.fail(e.what());
  }
  c.ensure_weight_tying = f.get<bool>("ensure_weight_tying");
  return c;
}

ojson LoraConfig::to_json() const {
  ojson fields;
  fields["r"] = r;
  if (lora_alpha == std::floor(lora_alpha) && std::abs(lora_alpha) < 1e15) fields["lora_alpha"] = static_cast<int64_t>(lora_alpha);
  else fields["lora_alpha"] = lora_alpha;
  fields["lora_dropout"] = lora_dropout;
  fields["bias"] = bias;
  fields["fan_in_fan_out"] = fan_in_fan_out;
  fields["use_rslora"] = use_rslora;
  fields["use_dora"] = use_dora;
  fields["lora_bias"] = lora_bias;
  if (init_lora_weights == "true" || init_lora_weights == "false") fields["init_lora_weights"] = init_lora_weights == "true";
  else fields["init_lora_weights"] = init_lora_weights;
  if (init_lora_weights == "loftq") fields["loftq_config"] = {{"loftq_bits", 4}, {"loftq_iter", loftq_iter}};
  if (init_lora_weights == "lora_ga")
    fields["lora_ga_config"] = {
        {"direction", lora_ga_direction}, {"scale", lora_ga_scale}, {"stable_gamma", lora_ga_stable_gamma}};
  if (init_lora_weights == "corda")
    fields["corda_config"] = {{"cache_file", nullptr},   {"covariance_file", nullptr},
                              {"corda_method", corda_method}, {"verbose", false},
                              {"use_float16_for_covariance", false}, {"prune_temporary_fields", true}};
  if (init_lora_weights == "eva")
    fields["eva_config"] = {{"rho", eva.rho}, {"tau", eva.tau}, {"use_label_mask", eva.use_label_mask},
                            {"label_mask_value", eva.label_mask_value}, {"whiten", eva.whiten},
                            {"adjust_scaling_factors", eva.adjust_scaling_factors}};
  ojson rp = ojson::object(), ap = ojson::object();
  for (const auto& [k, v] : rank_pattern) rp[k] = v;
  for (const auto& [k, v] : alpha_pattern) ap[k] = v;
  fields["rank_pattern"] = rp;
  fields["alpha_pattern"] = ap;
  if (lora_fa) fields["lora_fa"] = true;
  if (target_parameters) fields["target_parameters"] = *target_parameters;
  fields["trainable_token_indices"] = trainable_token_indices;
  fields["ensure_weight_tying"] = ensure_weight_tying;
  ojson j = config_json(*this, lora_defaults(), fields);
  if (!lora_fa) j.erase("lora_fa");
  return j;
}


int64_t LoraConfig::rank_for(const std::string& module) const {
  const int64_t* v = pattern_value(rank_pattern, module);
  return v ? *v : r;
}

double LoraConfig::alpha_for(const std::string& module) const {
  const double* v = pattern_value(alpha_pattern, module);
  return v ? *v : lora_alpha;
}

double LoraConfig::scaling_for(const std::string& module) const {
  const double rank = static_cast<double>(rank_for(module)), alpha = alpha_for(module);
  return use_rslora ? alpha / std::sqrt(rank) : alpha / rank;
}

}  // namespace peft

namespace peft {

void LoraConfig::resolve(const Model& model) {
  // As HF PEFT: no target_modules means the architecture's usual ones, saved as a list.
  if (targets.empty()) targets.target_list = default_targets(model, "LORA", lora_default_targets());
}

namespace {
// HF PEFT's _inject_parameters: "<module>.<param>" equal to an entry or ending in ".<entry>".
bool parameter_targeted(const std::vector<std::string>& entries, const std::string& key) {
  for (const auto& e : entries)
    if (key == e || (key.size() > e.size() && key.compare(key.size() - e.size() - 1, std::string::npos, "." + e) == 0))
      return true;
  return false;
}

// The targeted parameters of a module, in its registration order.
std::vector<std::string> targeted_parameters(const std::vector<std::string>& entries, const std::string& path,
                                             const Module& m) {
  std::vector<std::string> out;
  for (const auto& s : m.slots())
    if (parameter_targeted(entries, path + "." + s.name)) out.push_back(s.name);
  return out;
}

// HF PEFT 0.21 rewrites, on transformers 5's MoE models, target_modules naming the v4 expert
// projections or the router (_MOE_TARGET_MODULE_MAPPING) into target_parameters, doubling
// rank and alpha where two of them fuse. We do not reproduce that rewrite: such a config
// is refused with the spelling that means the same thing here.
void refuse_v4_moe_targets(const Model& model, const TargetSpec& targets) {
  static const std::map<std::string, std::vector<std::string>> kV4Names = {
      {"mixtral", {"w1", "w2", "w3", "gate"}}, {"qwen3_moe", {"gate_proj", "up_proj", "down_proj", "gate"}},
      {"qwen2_moe", {"gate_proj", "up_proj", "down_proj", "gate"}}};
  const auto type = model.config().value("model_type", std::string());
  auto it = kV4Names.find(type);
  if (it == kV4Names.end()) return;
  const std::string fix = " names a transformers 4 expert projection of " + type +
                          "; HF PEFT rewrites it into target_parameters: give target_parameters "
                          "[\"experts.gate_up_proj\", \"experts.down_proj\"] instead";
  if (targets.target_regex) {
    std::string lower = *targets.target_regex;
    std::transform(lower.begin(), lower.end(), lower.begin(), ::tolower);
    if (lower == "all-linear") throw std::invalid_argument("target_modules 'all-linear'" + fix);
  }
  for (const auto& t : targets.target_list.value_or(std::vector<std::string>{}))
    for (const auto& n : it->second)
      if (t == n || (t.size() > n.size() && t.compare(t.size() - n.size() - 1, std::string::npos, "." + n) == 0))
        throw std::invalid_argument("target_modules '" + t + "'" + fix);
}
}  // namespace

void LoraConfig::add_token_targets(Model& model, NamedModules& out) const {
  token_plan_.reset();
  if (trainable_token_indices.is_null()) return;
  token_plan_ = plan_token_indices(model, trainable_token_indices, ensure_weight_tying, targets.modules_to_save);
  for (const auto& [path, m] : token_plan_->modules(model)) {
    if (std::any_of(out.begin(), out.end(), [&](const auto& p) { return p.first == path; }))
      throw std::invalid_argument("'" + path + "' is both a LoRA target and in trainable_token_indices");
    out.emplace_back(path, m);
  }
}

NamedModules LoraConfig::layer_targets(Model& model) const {
  refuse_v4_moe_targets(model, targets);
  // target_modules = [] with target_parameters: no module is targeted by name.
  const bool no_modules = target_parameters && !targets.target_regex && targets.target_list &&
                          targets.target_list->empty();
  NamedModules out = no_modules ? NamedModules{} : find_targets(model, targets, task_type);
  add_token_targets(model, out);
  if (!target_parameters) return out;
  size_t found = 0;
  for (auto& [path, m] : model.named_modules()) {
    if (path.empty() || dynamic_cast<LayerAdapter*>(m)) continue;
    if (targeted_parameters(*target_parameters, path, *m).empty()) continue;
    if (!dynamic_cast<ParamAdaptableLayer*>(m))
      throw std::invalid_argument("target_parameters: '" + path + "' is a " + m->type_name() +
                                  ", whose parameters cannot be targeted here (target it with target_modules)");
    ++found;
    if (std::none_of(out.begin(), out.end(), [&](const auto& p) { return p.first == path; })) out.emplace_back(path, m);
  }
  if (found == 0) {
    std::string list;
    for (const auto& t : *target_parameters) list += (list.empty() ? "" : ", ") + t;
    throw std::invalid_argument("target_parameters [" + list + "] matched no parameter of " + model.type_name());
  }
  return out;
}

std::vector<std::string> LoraConfig::trained_base_parameters(Model& model, const std::set<std::string>& adapted) const {
  return bias_parameters(model, bias, ".lora_", adapted);
}

std::unique_ptr<AdapterConfig> LoraConfig::for_loading() const {
  auto c = std::make_unique<LoraConfig>(*this);
  c->init_lora_weights = "true";
  return c;
}

std::shared_ptr<LayerAdapter> LoraConfig::make_layer_adapter(const std::string& path, Module& m,
                                                             at::Generator& gen) const {
  if (token_plan_ && token_plan_->find(path)) return token_plan_->make(path, m, gen);
  const int64_t r = rank_for(path);
  const double scaling = scaling_for(path);
  if (auto* ph = dynamic_cast<ParamAdaptableLayer*>(&m)) return make_param_wrapper(path, *ph, gen);
  auto* host = dynamic_cast<AdaptableLayer*>(&m);
  const LayerKind kind = host ? host->kind() : LayerKind::kBlock;
  if (kind == LayerKind::kLinear) {
    // A weight stored [in, out] (GPT-2's Conv1D) needs fan_in_fan_out, which HF PEFT also
    // forces on (with a warning) when the config lacks it.
    auto lora = std::make_shared<LoraLinear>(host, host->input_dim(), host->output_dim(), r, scaling, lora_dropout,
                                             use_dora, fan_in_fan_out || host->weight_is_in_out());
    lora->freeze_A = lora_fa;
    lora->loftq_iter = loftq_iter;
    if (lora_bias) lora->add_bias();
    if (init_lora_weights == "corda" || init_lora_weights == "lora_ga" || init_lora_weights == "eva") {
      const char* what = init_lora_weights == "corda" ? "CorDA init" : init_lora_weights == "eva" ? "EVA init" : "LoRA-GA init";
      if (!calibration || !calibration->count(path))
        throw std::invalid_argument(std::string(what) + " of '" + path + "' needs a calibration pass over data first "
                                    "(peft train runs one on the training file)");
      lora->calibration = calibration->at(path);
      lora->corda_method = corda_method;
      lora->lora_ga_direction = lora_ga_direction;
      lora->lora_ga_scale = lora_ga_scale;
      lora->lora_ga_stable_gamma = lora_ga_stable_gamma;
    }
    lora->initialize(init_lora_weights, use_dora, gen);
    return lora;
  }
  if (kind == LayerKind::kEmbedding) {
    if (use_dora) throw std::invalid_argument("DoRA on embedding '" + path + "' is not supported");
    if (lora_bias) throw std::invalid_argument("lora_bias on embedding '" + path + "' is not supported (as in HF PEFT)");
    auto lora = std::make_shared<LoraEmbedding>(host, host->input_dim(), host->output_dim(), r, scaling);
    lora->initialize(init_lora_weights, gen);
    return lora;
  }
  throw std::invalid_argument("target module '" + path + "' is a " + m.type_name() +
                              "; LoRA supports Linear, Conv1D and Embedding");
}


std::shared_ptr<LayerAdapter> LoraConfig::make_param_wrapper(const std::string& path, ParamAdaptableLayer& host,
                                                             at::Generator& gen) const {
  const auto names =
      target_parameters ? targeted_parameters(*target_parameters, path, host) : std::vector<std::string>{};
  if (names.empty())
    throw std::invalid_argument("target module '" + path + "' is a " + host.type_name() +
                                "; adapt its parameters with target_parameters");
  // As HF PEFT's ParamWrapper, which cannot factor x out of these.
  const std::pair<bool, const char*> refused[] = {
      {lora_dropout > 0, "lora_dropout != 0"}, {use_dora, "use_dora"}, {fan_in_fan_out, "fan_in_fan_out"}};
  for (const auto& [bad, why] : refused)
    if (bad) throw std::invalid_argument("target_parameters ('" + path + "') do not work with " + std::string(why));
  std::vector<LoraParamWrapper::Target> ts;
  for (const auto& n : names) {
    const at::Tensor& p = *host.parameter(n);
    if (p.dim() != 2 && p.dim() != 3)
      throw std::invalid_argument("target_parameters: '" + path + "." + n + "' is " + std::to_string(p.dim()) +
                                  "-D; only 2-D and 3-D parameters can be adapted");
    const std::string key = path + "." + n;  // what HF PEFT matches rank_pattern against
    LoraParamWrapper::Target t;
    t.name = n;
    t.experts = p.dim() == 3 ? p.size(0) : 1;
    t.out = p.size(-2);
    t.in = p.size(-1);
    t.r = rank_for(key);
    t.scaling = scaling_for(key);
    ts.push_back(std::move(t));
  }
  auto w = std::make_shared<LoraParamWrapper>(&host, std::move(ts));
  w->initialize(init_lora_weights, gen);
  return w;
}

namespace {
[[maybe_unused]] const bool kLoraRegistered = register_method<LoraConfig>("LORA");
}  // namespace

}  // namespace peft
