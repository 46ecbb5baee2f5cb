#include <ATen/ATen.h>

#include "tuners/registry.h"
#include "peft/ia3.h"
#include "peft/layers.h"
#include "tuners/config_fields.h"
#include "tuners/target_match.h"
#include "util/regex.h"

namespace peft {

namespace {

const ojson& ia3_defaults() {
  static const auto j = ojson::parse(R"({
    "auto_mapping": null, "base_model_name_or_path": null, "exclude_modules": null, "fan_in_fan_out": false,
    "feedforward_modules": null, "inference_mode": true, "init_ia3_weights": true, "modules_to_save": null,
    "peft_type": "IA3", "peft_version": "0.21.2", "revision": null, "target_modules": null, "task_type": null
  })");
  return j;
}

// HF PEFT's TRANSFORMERS_MODELS_TO_IA3_{TARGET,FEEDFORWARD}_MODULES_MAPPING for our models.
const std::vector<std::pair<std::string, std::vector<std::string>>> kTargets = {
    {"llama", {"k_proj", "v_proj", "down_proj"}}, {"mistral", {"k_proj", "v_proj", "down_proj"}},
    {"qwen2", {"q_proj", "v_proj", "down_proj"}}, {"gpt2", {"c_attn", "mlp.c_proj"}},
    {"qwen3", {"q_proj", "v_proj", "down_proj"}}, {"gemma2", {"q_proj", "v_proj", "down_proj"}},
    {"gemma", {"q_proj", "v_proj", "down_proj"}}, {"phi", {"q_proj", "v_proj", "fc2"}},
    {"gemma3_text", {"q_proj", "v_proj", "down_proj"}},
    {"bert", {"key", "value", "output.dense"}}, {"roberta", {"key", "value", "output.dense"}},
    {"deberta-v2", {"key_proj", "value_proj", "output.dense"}}, {"deberta", {"in_proj", "output.dense"}},
    {"t5", {"k", "v", "wo"}}, {"mt5", {"k", "v", "wi_1"}}, {"opt", {"q_proj", "k_proj", "fc2"}},
    {"bart", {"q_proj", "v_proj", "fc2"}},
    {"gpt_neox", {"query_key_value", "dense_4h_to_h"}}, {"bloom", {"query_key_value", "mlp.dense_4h_to_h"}},
    {"falcon", {"query_key_value", "dense_4h_to_h"}}, {"gptj", {"q_proj", "v_proj", "fc_out"}},
    {"gpt_bigcode", {"c_attn", "mlp.c_proj"}}, {"gpt_neo", {"q_proj", "v_proj", "c_proj"}}};
const std::vector<std::pair<std::string, std::vector<std::string>>> kFeedforward = {
    {"llama", {"down_proj"}}, {"mistral", {"down_proj"}}, {"qwen2", {"down_proj"}},
    {"qwen3", {"down_proj"}}, {"gemma", {"down_proj"}}, {"phi", {"fc2"}}, {"gemma2", {"down_proj"}}, {"gemma3_text", {"down_proj"}},
    {"gpt2", {"mlp.c_proj"}}, {"bert", {"output.dense"}}, {"roberta", {"output.dense"}}, {"t5", {"wo"}}, {"mt5", {"wi_1"}},
    {"deberta-v2", {"output.dense"}}, {"deberta", {"output.dense"}},
    {"opt", {"fc2"}}, {"bart", {"fc2"}}, {"gpt_neox", {"dense_4h_to_h"}},
    {"bloom", {"mlp.dense_4h_to_h"}}, {"falcon", {"dense_4h_to_h"}}, {"gptj", {"fc_out"}}, {"gpt_bigcode", {"mlp.c_proj"}},
    {"gpt_neo", {"c_proj"}}};

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), std::string::npos, suffix) == 0;
}

}  // namespace

IA3Config IA3Config::from_json(const ojson& j, const std::string& where, std::vector<std::string>* unknown) {
  IA3Config c;
  ConfigFields f(j, ia3_defaults(), "IA3", where, unknown, c);
  read_list_or_regex(f.value("feedforward_modules"), &c.feedforward_list, &c.feedforward_regex,
                     "feedforward_modules", where);
  c.fan_in_fan_out = f.get<bool>("fan_in_fan_out");
  c.init_ia3_weights = f.get<bool>("init_ia3_weights");
  if (c.targets.target_list && c.feedforward_list)
    for (const auto& ff : *c.feedforward_list)
      if (std::find(c.targets.target_list->begin(), c.targets.target_list->end(), ff) == c.targets.target_list->end())
        f.fail("feedforward_modules entry '" + ff + "' is not in target_modules");
  return c;
}

ojson IA3Config::to_json() const {
  ojson fields;
  fields["feedforward_modules"] = list_or_regex(feedforward_list, feedforward_regex);
  fields["fan_in_fan_out"] = fan_in_fan_out;
  fields["init_ia3_weights"] = init_ia3_weights;
  return config_json(*this, ia3_defaults(), fields);
}

bool IA3Config::is_feedforward(const std::string& module) const {
  if (feedforward_regex) return Regex(*feedforward_regex).full_match(module);
  if (feedforward_list)
    for (const auto& ff : *feedforward_list)
      if (ends_with(module, ff)) return true;
  return false;
}

void IA3Config::resolve(const Model& model) {
  if (targets.empty()) targets.target_list = default_targets(model, "IA3", kTargets);
  if (!feedforward_list && !feedforward_regex) feedforward_list = default_targets(model, "IA3", kFeedforward);
}

NamedModules IA3Config::layer_targets(Model& model) const { return find_targets(model, targets, task_type); }

std::shared_ptr<LayerAdapter> IA3Config::make_layer_adapter(const std::string& path, Module& m,
                                                            at::Generator& gen) const {
  auto* host = dynamic_cast<AdaptableLayer*>(&m);
  if (!host || host->kind() != LayerKind::kLinear)
    throw std::invalid_argument("IA3: target module '" + path + "' is a " + m.type_name() +
                                "; IA3 supports Linear and Conv1D");
  auto a = std::make_shared<IA3Layer>(host, is_feedforward(path));
  if (!init_ia3_weights) a->ia3_l = at::randn(a->ia3_l.sizes(), gen, at::TensorOptions(at::kFloat));
  a->ia3_l = a->ia3_l.to(host->device());
  return a;
}


namespace {
[[maybe_unused]] const bool kIA3Registered = register_method<IA3Config>("IA3");
}  // namespace

}  // namespace peft
