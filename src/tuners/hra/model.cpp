// Where HRA goes (HF PEFT's HRAModel): Linear targets, one HRALayer each, HF's inits.
#include <ATen/ATen.h>

#include <cmath>

#include "peft/hra.h"
#include "tuners/config_fields.h"
#include "tuners/target_match.h"

namespace peft {

namespace {

// HF's TRANSFORMERS_MODELS_TO_HRA_TARGET_MODULES_MAPPING (LoRA's table) for our models. GPT-2's
// c_attn is a Conv1D, which HF's HRA refuses, and so do we (naming the layer).
const std::vector<std::pair<std::string, std::vector<std::string>>> kDefaultTargets = {
    {"llama", {"q_proj", "v_proj"}}, {"mistral", {"q_proj", "v_proj"}}, {"qwen2", {"q_proj", "v_proj"}},
    {"qwen3", {"q_proj", "v_proj"}}, {"gemma2", {"q_proj", "v_proj"}}, {"gemma3_text", {"q_proj", "v_proj"}},
    {"gpt2", {"c_attn"}},            {"bert", {"query", "value"}},
    {"roberta", {"query", "value"}}};

// nn.init.kaiming_uniform_(t, a=sqrt(5)) on [rows, cols]: U(-b, b), b = 1 / sqrt(cols).
at::Tensor kaiming_uniform_sqrt5(int64_t rows, int64_t cols, at::Generator& gen) {
  const double bound = 1.0 / std::sqrt(static_cast<double>(cols));
  return at::empty({rows, cols}, at::TensorOptions(at::kFloat)).uniform_(-bound, bound, gen);
}

}  // namespace

void HRAConfig::resolve(const Model& model) {
  if (targets.empty()) targets.target_list = default_targets(model, "HRA", kDefaultTargets);
}

NamedModules HRAConfig::layer_targets(Model& model) const { return find_targets(model, targets, task_type); }

std::shared_ptr<LayerAdapter> HRAConfig::make_layer_adapter(const std::string& path, Module& m,
                                                           at::Generator& gen) const {
  auto* host = dynamic_cast<AdaptableLayer*>(&m);
  if (!host || host->kind() != LayerKind::kLinear || host->weight_is_in_out() || !host->weight_tensor())
    throw std::invalid_argument("HRA: target module '" + path + "' is a " + m.type_name() +
                                "; only Linear layers are supported (as in HF PEFT)");
  auto a = std::make_shared<HRALayer>(host, r, apply_GS);
  const int64_t in = host->input_dim();
  if (init_weights && r % 2 == 0)
    a->u = kaiming_uniform_sqrt5(in, r / 2, gen).repeat_interleave(2, 1);  // reflections cancel in pairs
  else
    a->u = kaiming_uniform_sqrt5(in, r, gen);  // HF warns for odd r: no identity start
  a->to(host->weight_tensor()->device());
  return a;
}

std::vector<std::string> HRAConfig::trained_base_parameters(Model& model, const std::set<std::string>& adapted) const {
  std::vector<std::string> out;
  if (bias == "none") return out;
  for (const auto& [n, t] : model.named_parameters()) {
    if (!n.ends_with(".bias") || n.find(".hra_") != std::string::npos) continue;
    if (bias == "all" || adapted.count(n.substr(0, n.rfind('.')))) out.push_back(n);
  }
  return out;
}

}  // namespace peft
