// From a llama-architecture GGUF (what llama.cpp writes for Llama, SmolLM2, Mistral...)
// to transformers' layout, exactly as transformers 5.23 loads one
// (`from_pretrained(dir, gguf_file=...)`), and back for export:
//
//   - config.json from the `llama.*` and `tokenizer.ggml.*_id` metadata;
//   - tensor names (`blk.N.attn_q.weight` <-> `model.layers.N.self_attn.q_proj.weight`);
//   - the row permutation llama.cpp applies to q_proj and k_proj;
//   - tokenizer.json and tokenizer_config.json from the `tokenizer.ggml.*` metadata.
//
// Torch-free, like gguf.h.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "peft/gguf.h"

namespace peft {

// config.json for LlamaForCausalLM: the dict transformers builds from this file
// (AutoConfig.from_pretrained(..., gguf_file=...).to_diff_dict(), less
// "transformers_version") plus "architectures": ["LlamaForCausalLM"], which
// save_pretrained adds. Keys transformers does not map (rope scaling, ...) are
// ignored as it ignores them; absent ones take LlamaConfig's defaults. Throws GgufError
// unless general.architecture is "llama".
nlohmann::ordered_json llama_config_from_gguf(const GgufHeader& h);

// GGUF tensor name -> transformers parameter name:
//   token_embd.weight -> model.embed_tokens.weight, output_norm.weight -> model.norm.weight,
//   output.weight -> lm_head.weight, blk.N.{attn_q,attn_k,attn_v,attn_output}.weight ->
//   model.layers.N.self_attn.{q,k,v,o}_proj.weight, blk.N.{ffn_gate,ffn_up,ffn_down}.weight
//   -> model.layers.N.mlp.{gate,up,down}_proj.weight, blk.N.attn_norm.weight ->
//   model.layers.N.input_layernorm.weight, blk.N.ffn_norm.weight ->
//   model.layers.N.post_attention_layernorm.weight (".bias" maps alike).
// nullopt for tensors transformers does not load (rope_freqs.weight, ...).
std::optional<std::string> llama_hf_name(const std::string& gguf_name);
// The reverse, for export.
std::optional<std::string> llama_gguf_name(const std::string& hf_name);

// llama.cpp's converter reorders the rows of q_proj and k_proj (weights and biases) so
// that within each head the two rotary halves are interleaved: rows of a head viewed as
// [2, d] become [d, 2]. llama_unpermute_qk undoes it as transformers does on load,
// llama_permute_qk redoes it for export. Rows are moved whole, so `data` may hold any
// row format, quantized rows included: `rows` rows of `row_bytes` bytes each (4 * cols
// for float32). `n_head` is the config's num_attention_heads for q and
// num_key_value_heads for k; rows must be a multiple of 2 * n_head.
void llama_unpermute_qk(void* data, int64_t rows, size_t row_bytes, int64_t n_head);
void llama_permute_qk(void* data, int64_t rows, size_t row_bytes, int64_t n_head);
// The n_head to undo for this GGUF tensor ("blk.N.attn_q.*": num_attention_heads,
// "blk.N.attn_k.*": num_key_value_heads, from a llama_config_from_gguf config), or 0 if
// transformers leaves it as stored.
int64_t llama_qk_heads(const std::string& gguf_name, const nlohmann::ordered_json& config);

// The Hugging Face tokenizer transformers builds from `tokenizer.ggml.*` metadata:
// "gpt2" is byte-level BPE with the file's merges; "llama" is SentencePiece-style BPE
// with byte fallback, its merges from the file or, when absent, recovered from the
// token scores as transformers does. Control tokens become special added tokens,
// user-defined ones plain added tokens; `tokenizer.ggml.pre` picks transformers'
// split regex where it has one. tokenizer_config.json carries the bos/eos/unk/pad
// tokens, add_bos_token/add_eos_token and `tokenizer.chat_template`. Throws GgufError
// for other tokenizer models (t5, ...) and for architectures transformers builds
// differently (gemma*, phi3).
struct HfTokenizerFiles {
  nlohmann::ordered_json tokenizer;         // tokenizer.json
  nlohmann::ordered_json tokenizer_config;  // tokenizer_config.json
};
HfTokenizerFiles hf_tokenizer_from_gguf(const GgufHeader& h);

}  // namespace peft
