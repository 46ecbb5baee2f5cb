#include <ATen/ATen.h>

#include <cmath>
#include <stdexcept>

#include "peft/layers.h"
#include "peft/lora.h"
#include "tuners/config_fields.h"
#include "tuners/target_match.h"
#include "util/regex.h"

namespace peft {

namespace {

// Every field HF PEFT 0.21 writes for LoRA, with its default. Saving starts from this so
// files carry all keys HF expects; loading treats other keys as unknown.
const nlohmann::ordered_json& lora_defaults() {
  static const auto j = nlohmann::ordered_json::parse(R"({
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
    "alora_invocation_tokens", "arrow_config", "corda_config", "eva_config", "layer_replication",
    "lora_bias", "lora_ga_config", "megatron_config", "monteclora_config", "target_parameters",
    "trainable_token_indices", "use_bdlora", "use_qalora", "velora_config", "kasa_config"};

bool is_default(const nlohmann::ordered_json& v, const nlohmann::ordered_json& d) {
  if (v.is_null() || v == d) return true;
  if (v.is_object() && v.empty() && d.is_null()) return true;
  return v == false && d.is_null();
}

[[noreturn]] void fail(const std::string& where, const std::string& msg) {
  throw std::runtime_error(where + ": " + msg);
}

}  // namespace

LoraConfig LoraConfig::from_json(const nlohmann::ordered_json& j, const std::string& where,
                                 std::vector<std::string>* unknown_keys) {
  if (!j.is_object()) fail(where, "not a JSON object");
  const auto& defaults = lora_defaults();
  LoraConfig c;
  c.source = j;
  const std::string type = j.value("peft_type", std::string());
  if (type != "LORA") fail(where, "peft_type is '" + type + "', expected 'LORA'");
  for (const auto& [k, v] : j.items()) {
    if (!defaults.contains(k) && k != "lora_fa") {
      if (unknown_keys) unknown_keys->push_back(k);
      continue;
    }
    for (const char* u : kUnsupportedUnlessDefault)
      if (k == u && !is_default(v, defaults[k])) fail(where, "'" + k + "' = " + v.dump() + " is not supported");
  }
  try {
    read_list_or_regex(j.value("target_modules", nlohmann::ordered_json()), &c.targets.target_list,
                       &c.targets.target_regex, "target_modules", where);
    read_list_or_regex(j.value("exclude_modules", nlohmann::ordered_json()), &c.targets.exclude_list,
                       &c.targets.exclude_regex, "exclude_modules", where);
    if (!c.targets.target_list && !c.targets.target_regex) fail(where, "'target_modules' is required");
    auto lt = j.value("layers_to_transform", nlohmann::ordered_json());
    if (lt.is_number_integer()) c.targets.layers_to_transform = {lt.get<int64_t>()};
    else if (lt.is_array()) c.targets.layers_to_transform = lt.get<std::vector<int64_t>>();
    auto lp = j.value("layers_pattern", nlohmann::ordered_json());
    if (lp.is_string()) c.targets.layers_pattern = {lp.get<std::string>()};
    else if (lp.is_array()) c.targets.layers_pattern = lp.get<std::vector<std::string>>();
    auto ms = j.value("modules_to_save", nlohmann::ordered_json());
    if (ms.is_array()) c.targets.modules_to_save = ms.get<std::vector<std::string>>();
    c.r = j.value("r", int64_t{8});
    c.lora_alpha = j.value("lora_alpha", 8.0);
    c.lora_dropout = j.value("lora_dropout", 0.0);
    c.bias = j.value("bias", std::string("none"));
    c.fan_in_fan_out = j.value("fan_in_fan_out", false);
    c.use_rslora = j.value("use_rslora", false);
    c.use_dora = j.value("use_dora", false);
    c.lora_fa = j.value("lora_fa", false);
    auto init = j.value("init_lora_weights", nlohmann::ordered_json(true));
    c.init_lora_weights = init.is_boolean() ? (init.get<bool>() ? "true" : "false") : init.get<std::string>();
    // Bound to locals: a range-for over items() of a temporary would dangle.
    const auto rank_pattern = j.value("rank_pattern", nlohmann::ordered_json::object());
    const auto alpha_pattern = j.value("alpha_pattern", nlohmann::ordered_json::object());
    for (const auto& [k, v] : rank_pattern.items()) c.rank_pattern.emplace_back(k, v.get<int64_t>());
    for (const auto& [k, v] : alpha_pattern.items()) c.alpha_pattern.emplace_back(k, v.get<double>());
    auto tt = j.value("task_type", nlohmann::ordered_json());
    if (tt.is_string()) c.task_type = tt.get<std::string>();
    auto base = j.value("base_model_name_or_path", nlohmann::ordered_json());
    if (base.is_string()) c.base_model_name_or_path = base.get<std::string>();
    c.inference_mode = j.value("inference_mode", true);
  } catch (const nlohmann::json::exception& e) {
    fail(where, std::string("a field has the wrong type: ") + e.what());
  }
  if (c.r <= 0) fail(where, "'r' must be positive, got " + std::to_string(c.r));
  if (c.bias != "none" && c.bias != "all" && c.bias != "lora_only")
    fail(where, "'bias' must be none, all or lora_only, got '" + c.bias + "'");
  static const char* inits[] = {"true", "false", "gaussian", "pissa", "olora"};
  if (std::find(std::begin(inits), std::end(inits), c.init_lora_weights) == std::end(inits))
    fail(where, "init_lora_weights '" + c.init_lora_weights + "' is not supported (true, false, gaussian, pissa, olora)");
  for (const auto& [k, _] : c.rank_pattern) Regex check(k);
  for (const auto& [k, _] : c.alpha_pattern) Regex check(k);
  return c;
}

nlohmann::ordered_json LoraConfig::to_json() const {
  nlohmann::ordered_json j = lora_defaults();
  for (const auto& [k, v] : source.items()) j[k] = v;  // keep what we read, unknown keys too
  j["target_modules"] = list_or_regex(targets.target_list, targets.target_regex);
  j["exclude_modules"] = list_or_regex(targets.exclude_list, targets.exclude_regex);
  j["layers_to_transform"] = targets.layers_to_transform.empty() ? nlohmann::ordered_json()
                                                                   : nlohmann::ordered_json(targets.layers_to_transform);
  j["layers_pattern"] = targets.layers_pattern.empty()     ? nlohmann::ordered_json()
                        : targets.layers_pattern.size() == 1 ? nlohmann::ordered_json(targets.layers_pattern[0])
                                                             : nlohmann::ordered_json(targets.layers_pattern);
  j["modules_to_save"] = targets.modules_to_save.empty() ? nlohmann::ordered_json()
                                                         : nlohmann::ordered_json(targets.modules_to_save);
  j["r"] = r;
  if (lora_alpha == std::floor(lora_alpha)) j["lora_alpha"] = static_cast<int64_t>(lora_alpha);
  else j["lora_alpha"] = lora_alpha;
  j["lora_dropout"] = lora_dropout;
  j["bias"] = bias;
  j["fan_in_fan_out"] = fan_in_fan_out;
  j["use_rslora"] = use_rslora;
  j["use_dora"] = use_dora;
  if (init_lora_weights == "true" || init_lora_weights == "false") j["init_lora_weights"] = init_lora_weights == "true";
  else j["init_lora_weights"] = init_lora_weights;
  nlohmann::ordered_json rp = nlohmann::ordered_json::object(), ap = nlohmann::ordered_json::object();
  for (const auto& [k, v] : rank_pattern) rp[k] = v;
  for (const auto& [k, v] : alpha_pattern) ap[k] = v;
  j["rank_pattern"] = rp;
  j["alpha_pattern"] = ap;
  j["task_type"] = task_type.empty() ? nlohmann::ordered_json() : nlohmann::ordered_json(task_type);
  j["base_model_name_or_path"] =
      base_model_name_or_path.empty() ? nlohmann::ordered_json() : nlohmann::ordered_json(base_model_name_or_path);
  j["peft_type"] = "LORA";
  j["inference_mode"] = true;
  if (lora_fa) j["lora_fa"] = true;
  else j.erase("lora_fa");
  // HF writes keys sorted (json.dumps(sort_keys=True)).
  nlohmann::json sorted = j;  // std::map ordering
  return nlohmann::ordered_json::parse(sorted.dump());
}

namespace {
// HF PEFT's get_pattern_key: the first pattern p with re.match(rf"(.*\.)?({p})$", name).
template <class V>
const V* pattern_value(const std::vector<std::pair<std::string, V>>& patterns, const std::string& module) {
  for (const auto& [p, v] : patterns)
    if (Regex("(.*\\.)?(" + p + ")$").match_prefix(module)) return &v;
  return nullptr;
}
}  // namespace

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

NamedModules LoraConfig::layer_targets(Model& model) const { return find_targets(model, targets, task_type); }

std::shared_ptr<LayerAdapter> LoraConfig::make_layer_adapter(const std::string& path, Module& m,
                                                             at::Generator& gen) const {
  const int64_t r = rank_for(path);
  const double scaling = scaling_for(path);
  if (auto* l = dynamic_cast<Linear*>(&m)) {
    auto lora = std::make_shared<LoraLinear>(l, l->in_features, l->out_features, r, scaling, lora_dropout, use_dora,
                                             fan_in_fan_out);
    lora->freeze_A = lora_fa;
    lora->initialize(init_lora_weights, use_dora, gen);
    return lora;
  }
  if (auto* c = dynamic_cast<Conv1D*>(&m)) {
    // GPT-2's Conv1D stores W as [in, out]: LoRA needs fan_in_fan_out, which HF PEFT
    // also forces on (with a warning) when the config lacks it.
    auto lora = std::make_shared<LoraLinear>(c, c->in_features, c->out_features, r, scaling, lora_dropout, use_dora,
                                             /*fan_in_fan_out=*/true);
    lora->freeze_A = lora_fa;
    lora->initialize(init_lora_weights, use_dora, gen);
    return lora;
  }
  if (auto* e = dynamic_cast<Embedding*>(&m)) {
    if (use_dora) throw std::invalid_argument("DoRA on embedding '" + path + "' is not supported");
    auto lora = std::make_shared<LoraEmbedding>(e, e->num_embeddings, e->embedding_dim, r, scaling);
    lora->initialize(init_lora_weights, gen);
    return lora;
  }
  throw std::invalid_argument("target module '" + path + "' is a " + m.type_name() +
                              "; LoRA supports Linear, Conv1D and Embedding");
}

}  // namespace peft
