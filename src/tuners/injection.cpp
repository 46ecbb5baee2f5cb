#include "tuners/injection.h"

#include <stdexcept>

namespace peft {

DefaultTargets lora_default_targets(const DefaultTargets& overrides) {
  // The entries of peft.utils.constants.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
  // (0.21) that are lists; gemma4's is a regex over a model we do not load.
  DefaultTargets table = {
      {"t5", {"q", "v"}},         {"mt5", {"q", "v"}},
      {"bart", {"q_proj", "v_proj"}},
      {"gpt2", {"c_attn"}},       {"bloom", {"query_key_value"}},
      {"blip-2", {"q", "v", "q_proj", "v_proj"}},
      {"opt", {"q_proj", "v_proj"}},
      {"gptj", {"q_proj", "v_proj"}},
      {"gpt_neox", {"query_key_value"}},
      {"gpt_neo", {"q_proj", "v_proj"}},
      {"bert", {"query", "value"}},
      {"roberta", {"query", "value"}},
      {"xlm-roberta", {"query", "value"}},
      {"electra", {"query", "value"}},
      {"deberta-v2", {"query_proj", "value_proj"}},
      {"deberta", {"in_proj"}},
      {"layoutlm", {"query", "value"}},
      {"llama", {"q_proj", "v_proj"}},
      {"llama4", {"q_proj", "v_proj"}},
      {"chatglm", {"query_key_value"}},
      {"gpt_bigcode", {"c_attn"}},
      {"mpt", {"Wqkv"}},
      {"RefinedWebModel", {"query_key_value"}},
      {"RefinedWeb", {"query_key_value"}},
      {"falcon", {"query_key_value"}},
      {"btlm", {"c_proj", "c_attn"}},
      {"codegen", {"qkv_proj"}},
      {"mistral", {"q_proj", "v_proj"}},
      {"mixtral", {"q_proj", "v_proj"}},
      {"stablelm", {"q_proj", "v_proj"}},
      {"phi", {"q_proj", "v_proj", "fc1", "fc2"}},
      {"gemma", {"q_proj", "v_proj"}},
      {"gemma2", {"q_proj", "v_proj"}},
      {"gemma3_text", {"q_proj", "v_proj"}},
      {"qwen2", {"q_proj", "v_proj"}},
      {"qwen3", {"q_proj", "v_proj"}},
      {"nemotron_h", {"q_proj", "k_proj", "v_proj", "o_proj"}},
      {"rwkv", {"key", "value", "receptance", "output"}},
      {"rwkv7", {"r_proj", "k_proj", "v_proj", "o_proj", "key", "value"}},
  };
  for (const auto& [type, names] : overrides) {
    bool replaced = false;
    for (auto& entry : table)
      if (entry.first == type) entry.second = names, replaced = true;
    if (!replaced) table.emplace_back(type, names);
  }
  return table;
}

AdaptableLayer& linear_host(const char* method, const std::string& path, Module& m, LinearHost accept) {
  auto* l = dynamic_cast<AdaptableLayer*>(&m);
  const bool conv1d_ok = accept == LinearHost::kLinearOrConv1D;
  if (!l || l->kind() != LayerKind::kLinear || !l->weight_tensor() || (l->weight_is_in_out() && !conv1d_ok))
    throw std::invalid_argument(std::string(method) + ": target module '" + path + "' is a " + m.type_name() +
                                (conv1d_ok ? "; only Linear and Conv1D layers are supported"
                                           : "; only Linear layers are supported"));
  return *l;
}

std::vector<std::string> bias_parameters(Model& model, const std::string& bias, const std::string& adapter_marker,
                                         const std::set<std::string>& adapted) {
  std::vector<std::string> out;
  if (bias == "none") return out;
  for (const auto& [n, t] : model.named_parameters()) {
    if (!(n == "bias" || n.ends_with(".bias")) || n.find(adapter_marker) != std::string::npos) continue;
    if (bias == "all" || adapted.count(n.substr(0, n.rfind('.')))) out.push_back(n);
  }
  return out;
}

}  // namespace peft
