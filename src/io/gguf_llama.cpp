// Llama GGUF <-> transformers: config.json, tensor names and the q/k row permutation,
// following transformers 5.23 (modeling_gguf_pytorch_utils.py, integrations/ggml.py).
#include <cctype>
#include <cstring>
#include <vector>

#include "io/gguf_internal.h"
#include "peft/gguf_llama.h"

namespace peft {
namespace {

using Json = nlohmann::ordered_json;

// A metadata value as transformers' _gguf_parse_value + load_gguf_checkpoint turn it
// into Python: numbers, bools and strings as such; an array as a list of its elements,
// flattened, except that a one-element array becomes that element.
Json to_json(const GgufValue& v, const std::string& where) {
  switch (v.type()) {
    case GgufType::BOOL: return v.as_bool();
    case GgufType::STRING:
      if (!gguf_valid_utf8(v.as_string())) throw GgufError(where + ": a config string is not valid UTF-8");
      return v.as_string();
    case GgufType::F32: case GgufType::F64: return v.as_float();
    case GgufType::U64: return v.as_uint();
    case GgufType::ARRAY: break;
    default: return v.as_int();
  }
  Json list = Json::array();
  if (v.elem_type() == GgufType::STRING) {
    for (const auto& s : v.as_string_array()) list.push_back(to_json(GgufValue::string(s), where));
  } else if (v.elem_type() == GgufType::ARRAY) {
    for (const auto& item : v.as_array_of_arrays()) {
      Json inner = to_json(item, where);
      if (inner.is_array()) list.insert(list.end(), inner.begin(), inner.end());
      else list.push_back(inner);
    }
  } else {
    for (uint64_t bits : v.element_bits()) list.push_back(to_json(GgufValue::number(v.elem_type(), bits), where));
  }
  if (list.size() == 1) return list[0];
  return list;
}

// `llama.<suffix>` -> config key, as GGUF_CONFIG_MAPPING["llama"].
struct KeyMap {
  const char* gguf;
  const char* hf;
};
constexpr KeyMap kLlamaKeys[] = {
    {"llama.context_length", "max_position_embeddings"},
    {"llama.block_count", "num_hidden_layers"},
    {"llama.feed_forward_length", "intermediate_size"},
    {"llama.embedding_length", "hidden_size"},
    {"llama.rope.dimension_count", "head_dim"},
    {"llama.rope.freq_base", "rope_theta"},
    {"llama.attention.head_count", "num_attention_heads"},
    {"llama.attention.head_count_kv", "num_key_value_heads"},
    {"llama.attention.layer_norm_rms_epsilon", "rms_norm_eps"},
    {"llama.vocab_size", "vocab_size"},
    {"tokenizer.ggml.bos_token_id", "bos_token_id"},
    {"tokenizer.ggml.eos_token_id", "eos_token_id"},
    {"tokenizer.ggml.unknown_token_id", "unk_token_id"},
    {"tokenizer.ggml.padding_token_id", "pad_token_id"},
    {"general.name", "_model_name_or_path"},
};

// Per-layer tensors: GGUF leaf -> transformers module path inside model.layers.N.
constexpr KeyMap kLayerNames[] = {
    {"attn_q", "self_attn.q_proj"},   {"attn_k", "self_attn.k_proj"},
    {"attn_v", "self_attn.v_proj"},   {"attn_output", "self_attn.o_proj"},
    {"ffn_gate", "mlp.gate_proj"},    {"ffn_up", "mlp.up_proj"},
    {"ffn_down", "mlp.down_proj"},    {"attn_norm", "input_layernorm"},
    {"ffn_norm", "post_attention_layernorm"},
};
constexpr KeyMap kGlobalNames[] = {
    {"token_embd", "model.embed_tokens"},
    {"output_norm", "model.norm"},
    {"output", "lm_head"},
};

// Splits "stem.weight" / "stem.bias" into stem and ".weight" / ".bias".
bool split_param(const std::string& name, std::string* stem, std::string* suffix) {
  for (const char* s : {".weight", ".bias"}) {
    const size_t n = std::strlen(s);
    if (name.size() > n && name.compare(name.size() - n, n, s) == 0) {
      *stem = name.substr(0, name.size() - n);
      *suffix = s;
      return true;
    }
  }
  return false;
}

// "<prefix><digits>.<rest>" -> digits and rest.
bool split_layer(const std::string& stem, const std::string& prefix, std::string* layer, std::string* rest) {
  if (stem.compare(0, prefix.size(), prefix) != 0) return false;
  size_t i = prefix.size(), j = i;
  while (j < stem.size() && std::isdigit(static_cast<unsigned char>(stem[j]))) ++j;
  if (j == i || j >= stem.size() || stem[j] != '.') return false;
  *layer = stem.substr(i, j - i);
  *rest = stem.substr(j + 1);
  return true;
}

// Moves rows so that out row `to(r)` receives in row r (blocks of 2 * d rows per head).
template <class Dest>
void permute_rows(void* data, int64_t rows, size_t row_bytes, int64_t n_head, Dest to) {
  if (n_head <= 0 || rows % (2 * n_head) != 0)
    throw GgufError("q/k permutation: " + std::to_string(rows) + " rows do not split into " +
                    std::to_string(n_head) + " heads of two halves");
  const int64_t d = rows / n_head / 2;
  auto* p = static_cast<uint8_t*>(data);
  const std::vector<uint8_t> in(p, p + static_cast<size_t>(rows) * row_bytes);
  for (int64_t h = 0; h < n_head; ++h)
    for (int64_t i = 0; i < d; ++i)
      for (int64_t j = 0; j < 2; ++j) {
        const int64_t base = h * 2 * d;
        const auto [src, dst] = to(base, d, i, j);
        std::memcpy(p + dst * row_bytes, in.data() + src * row_bytes, row_bytes);
      }
}

}  // namespace

nlohmann::ordered_json llama_config_from_gguf(const GgufHeader& h) {
  const GgufMetadata& m = h.metadata;
  const std::string& arch = m.get_string("general.architecture");
  if (arch != "llama") throw GgufError(m.where() + ": general.architecture is '" + arch + "', not 'llama'");
  // transformers treats a llama file whose name is exactly "mistral" as Mistral.
  if (const GgufValue* name = m.find("general.name"); name && name->type() == GgufType::STRING &&
                                                       name->as_string() == "mistral")
    throw GgufError(m.where() + ": transformers loads this file as a Mistral model, not Llama");

  Json got = Json::object();
  for (const auto& k : kLlamaKeys)
    if (const GgufValue* v = m.find(k.gguf)) got[k.hf] = to_json(*v, m.where());
  auto pick = [&](const char* key, Json fallback) { return got.contains(key) ? got[key] : fallback; };

  bool has_output = false;
  for (const auto& t : h.tensors) has_output |= t.name == "output.weight";
  Json vocab_size = 32000;  // LlamaConfig's default, when nothing says otherwise
  if (got.contains("vocab_size")) vocab_size = got["vocab_size"];
  else if (const GgufValue* tokens = m.find("tokenizer.ggml.tokens"); tokens && tokens->is_array())
    vocab_size = tokens->size();

  Json c = Json::object();
  c["architectures"] = Json::array({"LlamaForCausalLM"});
  c["vocab_size"] = vocab_size;
  c["hidden_size"] = pick("hidden_size", 4096);
  c["intermediate_size"] = pick("intermediate_size", 11008);
  c["num_hidden_layers"] = pick("num_hidden_layers", 32);
  c["num_attention_heads"] = pick("num_attention_heads", 32);
  c["num_key_value_heads"] = pick("num_key_value_heads", c["num_attention_heads"]);
  c["hidden_act"] = "silu";
  c["max_position_embeddings"] = pick("max_position_embeddings", 2048);
  c["initializer_range"] = 0.02;
  c["rms_norm_eps"] = pick("rms_norm_eps", 1e-6);
  c["use_cache"] = true;
  c["pad_token_id"] = pick("pad_token_id", nullptr);
  c["bos_token_id"] = pick("bos_token_id", 1);
  c["eos_token_id"] = pick("eos_token_id", 2);
  c["pretraining_tp"] = 1;
  c["tie_word_embeddings"] = !has_output;
  c["rope_parameters"] = {{"rope_theta", pick("rope_theta", 10000.0)}, {"rope_type", "default"}};
  c["attention_bias"] = false;
  c["attention_dropout"] = 0.0;
  c["mlp_bias"] = false;
  if (got.contains("head_dim")) {
    c["head_dim"] = got["head_dim"];
  } else {
    const Json& hidden = c["hidden_size"];
    const Json& heads = c["num_attention_heads"];
    if (!hidden.is_number_integer() || !heads.is_number_integer() || heads.get<int64_t>() <= 0)
      throw GgufError(m.where() + ": cannot derive head_dim from embedding_length and attention.head_count");
    c["head_dim"] = hidden.get<int64_t>() / heads.get<int64_t>();
  }
  c["model_type"] = "llama";
  if (got.contains("_model_name_or_path")) c["_model_name_or_path"] = got["_model_name_or_path"];
  if (got.contains("unk_token_id")) c["unk_token_id"] = got["unk_token_id"];
  return c;
}

std::optional<std::string> llama_hf_name(const std::string& gguf_name) {
  std::string stem, suffix, layer, leaf;
  if (!split_param(gguf_name, &stem, &suffix)) return std::nullopt;
  for (const auto& g : kGlobalNames)
    if (stem == g.gguf) return std::string(g.hf) + suffix;
  if (!split_layer(stem, "blk.", &layer, &leaf)) return std::nullopt;
  for (const auto& l : kLayerNames)
    if (leaf == l.gguf) return "model.layers." + layer + "." + l.hf + suffix;
  return std::nullopt;
}

std::optional<std::string> llama_gguf_name(const std::string& hf_name) {
  std::string stem, suffix, layer, rest;
  if (!split_param(hf_name, &stem, &suffix)) return std::nullopt;
  for (const auto& g : kGlobalNames)
    if (stem == g.hf) return std::string(g.gguf) + suffix;
  if (!split_layer(stem, "model.layers.", &layer, &rest)) return std::nullopt;
  for (const auto& l : kLayerNames)
    if (rest == l.hf) return "blk." + layer + "." + l.gguf + suffix;
  return std::nullopt;
}

// Head h's rows are [h][j][i] (j: half, i < d) in transformers' order and [h][i][j] in
// llama.cpp's.
void llama_unpermute_qk(void* data, int64_t rows, size_t row_bytes, int64_t n_head) {
  permute_rows(data, rows, row_bytes, n_head, [](int64_t base, int64_t d, int64_t i, int64_t j) {
    return std::pair{base + 2 * i + j, base + j * d + i};
  });
}

void llama_permute_qk(void* data, int64_t rows, size_t row_bytes, int64_t n_head) {
  permute_rows(data, rows, row_bytes, n_head, [](int64_t base, int64_t d, int64_t i, int64_t j) {
    return std::pair{base + j * d + i, base + 2 * i + j};
  });
}

int64_t llama_qk_heads(const std::string& gguf_name, const nlohmann::ordered_json& config) {
  // transformers matches ".attn_q." / ".attn_k." anywhere in the name.
  const char* key = nullptr;
  if (gguf_name.find(".attn_q.") != std::string::npos) key = "num_attention_heads";
  else if (gguf_name.find(".attn_k.") != std::string::npos) key = "num_key_value_heads";
  if (!key || !config.contains(key) || !config[key].is_number_integer()) return 0;
  return config[key].get<int64_t>();
}

}  // namespace peft
