// A llama-architecture config.json read as transformers reads it (LlamaConfig's and
// MistralConfig's defaults, RoPE parameters of either transformers generation), and each
// transformers tensor's llama.cpp name, shape and q/k permutation under it.
#include "io/gguf_export_internal.h"
#include "peft/gguf_llama.h"

namespace peft::gguf_export {

namespace {

struct ArchDefaults {
  const char* architecture;
  int64_t vocab, hidden, intermediate, layers, heads, kv_heads, context;  // kv_heads 0: = heads
};
// LlamaConfig's and MistralConfig's defaults (transformers 5.23).
constexpr ArchDefaults kArchs[] = {
    {"LlamaForCausalLM", 32000, 4096, 11008, 32, 32, 0, 2048},
    {"MistralForCausalLM", 32000, 4096, 14336, 32, 32, 8, 4096 * 32},
};

int64_t get_int(const Json& c, const char* key, int64_t fallback, const std::string& where) {
  auto it = c.find(key);
  if (it == c.end() || it->is_null()) return fallback;
  if (!it->is_number_integer()) fail(where, std::string("key '") + key + "' is not an integer");
  return it->get<int64_t>();
}

double get_float(const Json& c, const char* key, double fallback, const std::string& where) {
  auto it = c.find(key);
  if (it == c.end() || it->is_null()) return fallback;
  if (!it->is_number()) fail(where, std::string("key '") + key + "' is not a number");
  return it->get<double>();
}

// rope_parameters as transformers 5 builds it: the dict itself, or the v4 rope_scaling
// plus the top-level rope_theta; rope_type from "rope_type" or v4's "type".
Json rope_parameters(const Json& c, const std::string& where) {
  Json r = Json::object();
  if (auto it = c.find("rope_parameters"); it != c.end() && it->is_object()) r = *it;
  else if (auto s = c.find("rope_scaling"); s != c.end() && s->is_object()) r = *s;
  if (!r.contains("rope_theta")) r["rope_theta"] = get_float(c, "rope_theta", 10000.0, where);
  if (!r.contains("rope_type")) r["rope_type"] = r.contains("type") ? r["type"] : Json("default");
  if (!r["rope_type"].is_string() || !r["rope_theta"].is_number())
    fail(where, "rope_parameters: rope_type must be a string and rope_theta a number");
  const std::string type = r["rope_type"].get<std::string>();
  if (type != "default" && type != "linear" && type != "llama3")
    fail(where, "rope type '" + type + "' is not supported (default, linear and llama3 are)");
  if (type == "linear" && !(r.contains("factor") && r["factor"].is_number()))
    fail(where, "linear rope scaling needs a numeric 'factor'");
  return r;
}

}  // namespace

LlamaHparams llama_hparams(const Json& c, const std::string& where) {
  auto archs = c.find("architectures");
  if (archs == c.end() || !archs->is_array() || archs->empty() || !(*archs)[0].is_string())
    fail(where, "no 'architectures' list naming the model class");
  const std::string arch = (*archs)[0].get<std::string>();
  if (arch == "Qwen2ForCausalLM")
    fail(where, "Qwen2ForCausalLM converts to llama.cpp's qwen2 architecture, which is not supported "
                "(only llama: LlamaForCausalLM, MistralForCausalLM)");
  const ArchDefaults* d = nullptr;
  for (const auto& a : kArchs)
    if (arch == a.architecture) d = &a;
  if (!d) fail(where, arch + " is not a llama-architecture model (LlamaForCausalLM, MistralForCausalLM)");

  LlamaHparams hp;
  hp.architecture = arch;
  hp.config = c;
  hp.vocab_size = get_int(c, "vocab_size", d->vocab, where);
  hp.hidden_size = get_int(c, "hidden_size", d->hidden, where);
  hp.intermediate_size = get_int(c, "intermediate_size", d->intermediate, where);
  hp.n_layer = get_int(c, "num_hidden_layers", d->layers, where);
  hp.n_head = get_int(c, "num_attention_heads", d->heads, where);
  hp.n_head_kv = get_int(c, "num_key_value_heads", d->kv_heads ? d->kv_heads : hp.n_head, where);
  if (hp.n_head <= 0 || hp.n_head_kv <= 0) fail(where, "attention head counts must be positive");
  hp.head_dim = get_int(c, "head_dim", hp.hidden_size / hp.n_head, where);
  hp.context_length = get_int(c, "max_position_embeddings", d->context, where);
  hp.rms_norm_eps = get_float(c, "rms_norm_eps", 1e-6, where);
  if (auto t = c.find("tie_word_embeddings"); t != c.end() && !t->is_null()) {
    if (!t->is_boolean()) fail(where, "key 'tie_word_embeddings' is not a boolean");
    hp.tied = t->get<bool>();
  }
  hp.rope = rope_parameters(c, where);
  hp.rope_theta = hp.rope["rope_theta"].get<double>();
  for (int64_t v : {hp.vocab_size, hp.hidden_size, hp.intermediate_size, hp.n_layer, hp.head_dim})
    if (v <= 0) fail(where, "sizes and counts must be positive");
  if (hp.head_dim % 2 != 0) fail(where, "head_dim must be even (rotary halves)");
  return hp;
}

// ---------------------------------------------------------------- tensor names and shapes

std::optional<LlamaTensor> llama_tensor(const std::string& hf_name, const LlamaHparams& hp) {
  const auto gguf = llama_gguf_name(hf_name);
  if (!gguf) return std::nullopt;
  // "blk.N.leaf.suffix" or "leaf.suffix".
  const size_t last_dot = gguf->rfind('.');
  std::string leaf = gguf->substr(0, last_dot);
  if (leaf.starts_with("blk.")) {
    const size_t dot = leaf.find('.', 4);
    const std::string layer = leaf.substr(4, dot - 4);
    if (layer.size() > 9 || std::stoll(layer) >= hp.n_layer) return std::nullopt;
    leaf = leaf.substr(dot + 1);
  }
  const int64_t H = hp.hidden_size, I = hp.intermediate_size, V = hp.vocab_size;
  const int64_t q = hp.n_head * hp.head_dim, kv = hp.n_head_kv * hp.head_dim;
  LlamaTensor t{*gguf, {}, 0};
  if (leaf == "token_embd" || leaf == "output") {
    t.shape = {V, H};
  } else if (leaf == "output_norm" || leaf == "attn_norm" || leaf == "ffn_norm") {
    t.shape = {H};
  } else if (leaf == "attn_q") {
    t.shape = {q, H};
    t.permute_heads = hp.n_head;
  } else if (leaf == "attn_k") {
    t.shape = {kv, H};
    t.permute_heads = hp.n_head_kv;
  } else if (leaf == "attn_v") {
    t.shape = {kv, H};
  } else if (leaf == "attn_output") {
    t.shape = {H, q};
  } else if (leaf == "ffn_gate" || leaf == "ffn_up") {
    t.shape = {I, H};
  } else if (leaf == "ffn_down") {
    t.shape = {H, I};
  } else {
    return std::nullopt;
  }
  if (gguf->substr(last_dot + 1) == "bias") t.shape.resize(1);
  return t;
}

}  // namespace peft::gguf_export
