// Adaption prompts (LLaMA-Adapter, Zhang et al. 2023; HF PEFT 0.21's ADAPTION_PROMPT).
// The top `adapter_layers` attention modules each get a learned prompt P [1, adapter_len,
// hidden] and a zero-initialized gate g. With the module's queries q (after RoPE),
//   K = k_proj(P), V = v_proj(P)  (GPT-2: c_attn(P) split; key/value heads repeated for GQA)
//   extra = o_proj(g * softmax(q K^T / sqrt(head_dim)) V)   (GPT-2: no o_proj)
// is added to the module's output: every token sees every prompt (no mask, no position),
// the softmax runs in float32. Files hold HF's keys below the attention module
// (`...layers.N.self_attn.adaption_prompt`, `adaption_gate`).
#pragma once

#include <memory>
#include <string>

#include "peft/tuner.h"

namespace peft {

struct AdaptionPromptConfig : AdapterConfig {
  // The attention submodules' name; "" takes HF's for the model type (`self_attn`,
  // GPT-2's `attn`). HF PEFT supports model types llama, mistral and gpt2.
  std::string target_modules;
  int64_t adapter_len = 0;     // prompt tokens per layer
  int64_t adapter_layers = 0;  // adapted attention modules, counted from the top

  static AdaptionPromptConfig from_json(const nlohmann::ordered_json& j, const std::string& where,
                                        std::vector<std::string>* unknown_keys = nullptr);
  std::string peft_type() const override { return "ADAPTION_PROMPT"; }
  std::unique_ptr<AdapterConfig> clone() const override { return std::make_unique<AdaptionPromptConfig>(*this); }
  nlohmann::ordered_json to_json() const override;
  bool mergeable() const override { return false; }
  // Refuses model types HF PEFT does not adapt; fills target_modules; inference_mode stays
  // true (no prompt encoder to save beside the prompts).
  void resolve(const Model& model) override;
  // The prompts and gates of the top adapter_layers attention modules (prompts N(0, 1), gates 0).
  std::shared_ptr<InputAdapter> make_input_adapter(Model& model, at::Generator& gen) const override;
};

}  // namespace peft
