// Where FourierFT goes (HF PEFT's FourierFTModel): the targets, each layer's n_frequency
// (n_frequency_pattern), one FourierFTLayer each.
#include <ATen/ATen.h>

#include "peft/fourierft.h"
#include "peft/layers.h"
#include "tuners/config_fields.h"
#include "tuners/target_match.h"
#include "util/regex.h"

namespace peft {

namespace {

// HF's TRANSFORMERS_MODELS_TO_FOURIERFT_TARGET_MODULES_MAPPING for our models (LoRA's
// table, but GPT-2's mlp.c_proj).
const std::vector<std::pair<std::string, std::vector<std::string>>> kDefaultTargets = {
    {"llama", {"q_proj", "v_proj"}}, {"mistral", {"q_proj", "v_proj"}}, {"qwen2", {"q_proj", "v_proj"}},
    {"qwen3", {"q_proj", "v_proj"}}, {"gemma2", {"q_proj", "v_proj"}}, {"gemma3_text", {"q_proj", "v_proj"}},
    {"gpt2", {"mlp.c_proj"}},        {"bert", {"query", "value"}},
    {"roberta", {"query", "value"}}};

}  // namespace

void FourierFTConfig::resolve(const Model& model) {
  if (targets.empty()) targets.target_list = default_targets(model, "FOURIERFT", kDefaultTargets);
}

NamedModules FourierFTConfig::layer_targets(Model& model) const { return find_targets(model, targets, task_type); }

int64_t FourierFTConfig::n_frequency_for(const std::string& path) const {
  // HF: the first pattern key (in the file's order; ours sorted) with re.match(".*\.key$").
  for (const auto& [k, n] : n_frequency_pattern)
    if (Regex(".*\\." + k).full_match(path)) return n;
  if (auto it = n_frequency_pattern.find(path); it != n_frequency_pattern.end()) return it->second;
  return n_frequency;
}

std::shared_ptr<LayerAdapter> FourierFTConfig::make_layer_adapter(const std::string& path, Module& m,
                                                                 at::Generator& gen) const {
  auto* host = dynamic_cast<AdaptableLayer*>(&m);
  if (!host || host->kind() != LayerKind::kLinear || !host->weight_tensor())
    throw std::invalid_argument("FOURIERFT: target module '" + path + "' is a " + m.type_name() +
                                "; only Linear and Conv1D layers are supported");
  const int64_t n = n_frequency_for(path);
  if (n > host->input_dim() * host->output_dim())
    throw std::invalid_argument("FOURIERFT: n_frequency " + std::to_string(n) + " exceeds the " +
                                std::to_string(host->input_dim() * host->output_dim()) + " weights of '" + path + "'");
  auto a = std::make_shared<FourierFTLayer>(host, n, scaling, random_loc_seed);
  if (!init_weights) a->spectrum = at::randn({n}, gen, at::TensorOptions(at::kFloat));
  a->to(host->weight_tensor()->device());
  return a;
}

std::vector<std::string> FourierFTConfig::trained_base_parameters(Model& model,
                                                                  const std::set<std::string>& adapted) const {
  std::vector<std::string> out;
  if (bias == "none") return out;
  for (const auto& [n, t] : model.named_parameters()) {
    if (!n.ends_with(".bias") || n.find(".fourierft_") != std::string::npos) continue;
    if (bias == "all" || adapted.count(n.substr(0, n.rfind('.')))) out.push_back(n);
  }
  return out;
}

}  // namespace peft
