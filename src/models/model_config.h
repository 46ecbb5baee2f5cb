// What each model family reads from config.json, validated before any module is built:
// sizes are integers within bounds, activations are known, heads divide widths. No
// LibTorch here, so the fuzzer checks it alone.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace peft {

struct LlamaConfig {
  std::string arch;  // "Llama", "Mistral", "Qwen2", "Qwen3", "Phi3", ...: prefixes module type names
  int64_t vocab_size, hidden_size, intermediate_size, num_layers, num_heads, num_kv_heads, head_dim;
  int64_t max_position_embeddings;
  double rms_norm_eps;
  bool tie_word_embeddings, qkv_bias, o_bias, mlp_bias;
  std::string hidden_act;
  nlohmann::json rope;
  bool qk_norm = false;         // Qwen3: RMSNorm over head_dim on queries and keys, before RoPE
  int64_t sliding_window = 0;   // 0: none; else the window of the layers marked sliding
  std::vector<bool> sliding;    // per layer: true = "sliding_attention" (transformers' layer_types)
  std::vector<bool> no_rope;    // per layer: true = no rotary embedding (SmolLM3's NoPE layers); empty: all rotate
  // Granite's scalings; the defaults leave every other family as it is (attention_multiplier
  // 0: scores scaled by head_dim^-0.5).
  double embedding_multiplier = 1.0, residual_multiplier = 1.0, attention_multiplier = 0.0, logits_scaling = 1.0;
  static LlamaConfig from_json(const nlohmann::json& j, const std::string& arch, const std::string& where);
};

// Gemma 2 and Gemma 3 text (arch "Gemma2", "Gemma3"): LLaMA's sizes plus what Gemma adds.
struct GemmaConfig : LlamaConfig {
  double query_pre_attn_scalar;       // scores are scaled by query_pre_attn_scalar^-0.5
  std::optional<double> attn_softcap;  // attn_logit_softcapping
  std::optional<double> final_softcap; // final_logit_softcapping
  nlohmann::json rope_local;           // rope of sliding layers (Gemma 3); `rope` is the global one
  static GemmaConfig from_json(const nlohmann::json& j, const std::string& arch, const std::string& where);
};

struct GPT2Config {
  int64_t vocab_size, n_positions, n_embd, n_layer, n_head, n_inner;
  double layer_norm_epsilon;
  std::string activation_function;
  bool scale_attn_weights, scale_attn_by_inverse_layer_idx, tie_word_embeddings;
  static GPT2Config from_json(const nlohmann::json& j, const std::string& where);
};

struct BertConfig {
  int64_t vocab_size, hidden_size, num_layers, num_heads, intermediate_size, max_position_embeddings,
      type_vocab_size, num_labels;
  double layer_norm_eps;
  std::string hidden_act;
  // RoBERTa: positions count real tokens only, from pad_token_id + 1 (padding keeps
  // pad_token_id's position), as create_position_ids_from_input_ids does.
  bool padding_aware_positions = false;
  int64_t pad_token_id = 0;
  static BertConfig from_json(const nlohmann::json& j, const std::string& where);
};

struct ViTConfig {
  int64_t image_size, patch_size, num_channels, hidden_size, num_layers, num_heads, head_dim, intermediate_size,
      pooler_output_size, num_labels;
  double layer_norm_eps;
  bool qkv_bias;
  std::string hidden_act, pooler_act;
  static ViTConfig from_json(const nlohmann::json& j, const std::string& where);
};

// Number of labels as transformers derives it: id2label's size, else num_labels, else 2.
int64_t num_labels_of(const nlohmann::json& config, const std::string& where);

// Throws for an activation name we do not implement, naming it.
void check_activation(const std::string& name);

}  // namespace peft
