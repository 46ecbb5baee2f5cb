#include "models/model_config.h"

#include <algorithm>
#include <functional>
#include <stdexcept>

#include "models/config_reader.h"

namespace peft {

namespace {
// Which layers attend within `window` (read_sliding_layers); `fallback` is the family's
// rule when config.json lists none and applies only with a window.
void read_layer_types(const ConfigReader& r, LlamaConfig& c, int64_t window, const std::function<bool(int64_t)>& fallback) {
  c.sliding_window = window;
  c.sliding = read_sliding_layers(r, c.num_layers, [&](int64_t i) { return window > 0 && fallback(i); });
  if (window == 0 && std::find(c.sliding.begin(), c.sliding.end(), true) != c.sliding.end())
    r.fail("layer_types has sliding_attention layers but no sliding window is set (sliding_window / use_sliding_window)");
}

// SmolLM3Config: no_rope_layers (per layer, nonzero = rotary; by default every
// no_rope_layer_interval-th layer has none), and with use_sliding_window the NoPE layers
// attend within sliding_window unless layer_types says otherwise. Without
// use_sliding_window every layer is global, whatever layer_types holds, as in transformers.
void read_smollm3_layers(const ConfigReader& r, LlamaConfig& c) {
  const auto n = static_cast<size_t>(c.num_layers);
  if (r.has("no_rope_layers")) {
    const auto& v = r.json()["no_rope_layers"];
    if (!v.is_array() || v.size() != n)
      r.fail("'no_rope_layers' must list 1 (rotary) or 0 (none) for each of the " + std::to_string(n) + " layers");
    for (size_t i = 0; i < n; ++i) {
      if (!v[i].is_number_integer() && !v[i].is_boolean())
        r.fail("'no_rope_layers' must list 1 (rotary) or 0 (none) for each of the " + std::to_string(n) + " layers");
      c.no_rope[i] = v[i].is_boolean() ? !v[i].get<bool>() : v[i].get<int64_t>() == 0;
    }
  } else {
    const int64_t every = r.dim("no_rope_layer_interval", 4, ConfigLimits::kLayers);
    for (size_t i = 0; i < n; ++i) c.no_rope[i] = (static_cast<int64_t>(i) + 1) % every == 0;
  }
  if (!r.get<bool>("use_sliding_window", false)) {
    c.sliding.assign(n, false);
    return;
  }
  const int64_t window = r.has("sliding_window") ? r.dim("sliding_window", std::nullopt, ConfigLimits::kPositions) : 0;
  read_layer_types(r, c, window, [&c](int64_t i) { return c.no_rope[static_cast<size_t>(i)]; });
}

// Families whose single sliding_window, when set, applies to every layer.
bool whole_model_window(const std::string& arch) { return arch == "Mistral" || arch == "Phi3"; }
}  // namespace

LlamaConfig LlamaConfig::from_json(const nlohmann::json& j, const std::string& arch, const std::string& where) {
  ConfigReader r(j, where);
  LlamaConfig c;
  c.arch = arch;
  c.vocab_size = r.dim("vocab_size", std::nullopt, ConfigLimits::kVocab);
  c.hidden_size = r.dim("hidden_size", std::nullopt, ConfigLimits::kWidth);
  c.intermediate_size = r.dim("intermediate_size", std::nullopt, ConfigLimits::kWidth);
  c.num_layers = r.dim("num_hidden_layers", std::nullopt, ConfigLimits::kLayers);
  c.no_rope.assign(static_cast<size_t>(c.num_layers), false);
  c.num_heads = r.dim("num_attention_heads", std::nullopt, ConfigLimits::kHeads);
  c.num_kv_heads = r.dim("num_key_value_heads", c.num_heads, ConfigLimits::kHeads);
  c.head_dim = r.dim("head_dim", std::max<int64_t>(1, c.hidden_size / c.num_heads), ConfigLimits::kWidth);
  c.max_position_embeddings = r.dim("max_position_embeddings", 2048, ConfigLimits::kPositions);
  c.rms_norm_eps = r.positive("rms_norm_eps", 1e-6);
  c.tie_word_embeddings = r.get<bool>("tie_word_embeddings", false);
  c.hidden_act = r.get<std::string>("hidden_act", "silu");
  check_activation(c.hidden_act);
  if (arch == "Qwen2") {
    c.qkv_bias = true;
    c.o_bias = false;
    c.mlp_bias = false;
  } else {
    c.qkv_bias = c.o_bias = r.get<bool>("attention_bias", false);
    c.mlp_bias = r.get<bool>("mlp_bias", false);
  }
  if (c.num_heads % c.num_kv_heads != 0)
    r.fail("num_attention_heads " + std::to_string(c.num_heads) + " is not a multiple of num_key_value_heads " +
           std::to_string(c.num_kv_heads));
  // transformers 5 keeps rope settings in rope_parameters; older configs use rope_theta
  // and rope_scaling at the top level.
  if (r.has("rope_parameters")) {
    c.rope = j["rope_parameters"];
  } else {
    c.rope = r.has("rope_scaling") ? j["rope_scaling"] : nlohmann::json::object();
    c.rope["rope_theta"] = r.positive("rope_theta", 10000.0);
  }
  c.qk_norm = arch == "Qwen3";
  if (arch == "Granite") {  // GraniteConfig's defaults are 1
    c.embedding_multiplier = r.positive("embedding_multiplier", 1.0);
    c.residual_multiplier = r.positive("residual_multiplier", 1.0);
    c.attention_multiplier = r.positive("attention_multiplier", 1.0);
    c.logits_scaling = r.positive("logits_scaling", 1.0);
  }
  if (whole_model_window(arch)) {
    const int64_t window = r.has("sliding_window") ? r.dim("sliding_window", std::nullopt, ConfigLimits::kPositions) : 0;
    c.sliding_window = window;
    c.sliding.assign(static_cast<size_t>(c.num_layers), window > 0);
  } else if (arch == "Qwen3" || arch == "Qwen2") {
    // As Qwen2Config and Qwen3Config: the window only with use_sliding_window, then from
    // max_window_layers on.
    const bool use = r.get<bool>("use_sliding_window", false);
    const int64_t window = use ? r.dim("sliding_window", 4096, ConfigLimits::kPositions) : 0;
    const int64_t first = r.get<int64_t>("max_window_layers", 28);
    read_layer_types(r, c, window, [first](int64_t i) { return i >= first; });
  } else if (arch == "SmolLM3") {
    read_smollm3_layers(r, c);
  } else {
    c.sliding.assign(static_cast<size_t>(c.num_layers), false);
  }
  return c;
}

GemmaConfig GemmaConfig::from_json(const nlohmann::json& j, const std::string& arch, const std::string& where) {
  ConfigReader r(j, where);
  GemmaConfig c;
  static_cast<LlamaConfig&>(c) = LlamaConfig::from_json(j, arch, where);
  if (!r.has("head_dim")) c.head_dim = 256;  // Gemma2Config / Gemma3TextConfig default
  const bool gemma1 = arch == "Gemma";
  // transformers 5's GemmaConfig reads hidden_act only; Gemma 2/3 prefer hidden_activation.
  c.hidden_act = gemma1 ? r.get<std::string>("hidden_act", "gelu_pytorch_tanh")
                        : r.get<std::string>("hidden_activation", r.get<std::string>("hidden_act", "gelu_pytorch_tanh"));
  check_activation(c.hidden_act);
  c.tie_word_embeddings = r.get<bool>("tie_word_embeddings", true);
  c.rms_norm_eps = r.positive("rms_norm_eps", 1e-6);
  // Gemma 1 scales scores by head_dim^-0.5.
  c.query_pre_attn_scalar = gemma1 ? static_cast<double>(c.head_dim) : r.positive("query_pre_attn_scalar", 256);
  const bool gemma2 = arch == "Gemma2";
  auto softcap = [&](const char* key, std::optional<double> fallback) -> std::optional<double> {
    if (!r.json().contains(key)) return fallback;
    if (!r.has(key)) return std::nullopt;  // explicit null: no capping
    return r.positive(key, 1.0);
  };
  c.attn_softcap = softcap("attn_logit_softcapping", gemma2 ? std::optional<double>(50.0) : std::nullopt);
  c.final_softcap = softcap("final_logit_softcapping", gemma2 ? std::optional<double>(30.0) : std::nullopt);
  if (r.get<bool>("use_bidirectional_attention", false)) r.fail("use_bidirectional_attention is not supported");
  const int64_t window = r.has("sliding_window") ? r.dim("sliding_window", std::nullopt, ConfigLimits::kPositions) : 0;
  // Gemma 2 alternates from layer 0; Gemma 3 has every sliding_window_pattern-th layer global.
  const int64_t pattern = gemma2 ? 2 : r.dim("sliding_window_pattern", 6, ConfigLimits::kLayers);
  read_layer_types(r, c, window, [pattern](int64_t i) { return (i + 1) % pattern != 0; });
  if (arch != "Gemma3") {
    c.rope_local = c.rope;
  } else {
    // Gemma3TextConfig: rope_parameters per layer type; older configs say rope_theta
    // (global, default 1e6), rope_local_base_freq (local, default 1e4) and rope_scaling
    // (global layers only).
    const auto& rp = r.has("rope_parameters") ? j["rope_parameters"] : nlohmann::json::object();
    if (!rp.is_object()) r.fail("'rope_parameters' must be an object");
    auto per_type = [&](const char* type, const char* theta_key, double theta) {
      nlohmann::json p = rp.contains(type) && rp[type].is_object() ? rp[type] : nlohmann::json{{"rope_type", "default"}};
      if (std::string(type) == "full_attention" && r.has("rope_scaling") && !rp.contains(type)) p.update(j["rope_scaling"]);
      if (!p.contains("rope_theta")) p["rope_theta"] = r.positive(theta_key, theta);
      return p;
    };
    c.rope = per_type("full_attention", "rope_theta", 1e6);
    c.rope_local = per_type("sliding_attention", "rope_local_base_freq", 1e4);
  }
  return c;
}

GPT2Config GPT2Config::from_json(const nlohmann::json& j, const std::string& where) {
  ConfigReader r(j, where);
  GPT2Config c;
  c.vocab_size = r.dim("vocab_size", 50257, ConfigLimits::kVocab);
  c.n_positions = r.dim("n_positions", 1024, ConfigLimits::kPositions);
  c.n_embd = r.dim("n_embd", 768, ConfigLimits::kWidth);
  c.n_layer = r.dim("n_layer", 12, ConfigLimits::kLayers);
  c.n_head = r.dim("n_head", 12, ConfigLimits::kHeads);
  c.n_inner = r.dim("n_inner", 4 * c.n_embd, ConfigLimits::kWidth);
  c.layer_norm_epsilon = r.positive("layer_norm_epsilon", 1e-5);
  c.activation_function = r.get<std::string>("activation_function", "gelu_new");
  check_activation(c.activation_function);
  c.scale_attn_weights = r.get<bool>("scale_attn_weights", true);
  c.scale_attn_by_inverse_layer_idx = r.get<bool>("scale_attn_by_inverse_layer_idx", false);
  c.tie_word_embeddings = r.get<bool>("tie_word_embeddings", true);
  if (r.get<bool>("add_cross_attention", false)) r.fail("add_cross_attention is not supported");
  if (c.n_embd % c.n_head != 0) r.fail("n_embd is not a multiple of n_head");
  return c;
}

int64_t num_labels_of(const nlohmann::json& j, const std::string& where) {
  if (j.contains("id2label") && j["id2label"].is_object() && !j["id2label"].empty())
    return static_cast<int64_t>(j["id2label"].size());
  return ConfigReader(j, where).dim("num_labels", 2, ConfigLimits::kLabels);
}

BertConfig BertConfig::from_json(const nlohmann::json& j, const std::string& where) {
  ConfigReader r(j, where);
  BertConfig c;
  c.vocab_size = r.dim("vocab_size", 30522, ConfigLimits::kVocab);
  c.hidden_size = r.dim("hidden_size", 768, ConfigLimits::kWidth);
  c.num_layers = r.dim("num_hidden_layers", 12, ConfigLimits::kLayers);
  c.num_heads = r.dim("num_attention_heads", 12, ConfigLimits::kHeads);
  c.intermediate_size = r.dim("intermediate_size", 3072, ConfigLimits::kWidth);
  c.max_position_embeddings = r.dim("max_position_embeddings", 512, ConfigLimits::kPositions);
  c.type_vocab_size = r.dim("type_vocab_size", 2, ConfigLimits::kVocab);
  c.layer_norm_eps = r.positive("layer_norm_eps", 1e-12);
  c.hidden_act = r.get<std::string>("hidden_act", "gelu");
  c.num_labels = num_labels_of(j, where);
  const auto model_type = r.get<std::string>("model_type", "bert");
  c.padding_aware_positions = model_type == "roberta" || model_type == "xlm-roberta";
  c.pad_token_id = r.get<int64_t>("pad_token_id", c.padding_aware_positions ? 1 : 0);
  if (c.padding_aware_positions &&
      (c.pad_token_id < 0 || c.pad_token_id + 1 >= c.max_position_embeddings || c.pad_token_id >= c.vocab_size))
    r.fail("pad_token_id must index the vocabulary and leave positions after it");
  check_activation(c.hidden_act);
  if (r.get<bool>("is_decoder", false)) r.fail("BERT as a decoder (is_decoder) is not supported");
  const auto pos = r.get<std::string>("position_embedding_type", "absolute");
  if (pos != "absolute") r.fail("position_embedding_type '" + pos + "' is not supported");
  if (c.hidden_size % c.num_heads != 0) r.fail("hidden_size is not a multiple of num_attention_heads");
  return c;
}

ViTConfig ViTConfig::from_json(const nlohmann::json& j, const std::string& where) {
  ConfigReader r(j, where);
  ViTConfig c;
  c.image_size = r.dim("image_size", 224, ConfigLimits::kWidth);
  c.patch_size = r.dim("patch_size", 16, ConfigLimits::kWidth);
  c.num_channels = r.dim("num_channels", 3, ConfigLimits::kWidth);
  c.hidden_size = r.dim("hidden_size", 768, ConfigLimits::kWidth);
  c.num_layers = r.dim("num_hidden_layers", 12, ConfigLimits::kLayers);
  c.num_heads = r.dim("num_attention_heads", 12, ConfigLimits::kHeads);
  c.head_dim = r.dim("head_dim", std::max<int64_t>(1, c.hidden_size / c.num_heads), ConfigLimits::kWidth);
  c.intermediate_size = r.dim("intermediate_size", 3072, ConfigLimits::kWidth);
  c.layer_norm_eps = r.positive("layer_norm_eps", 1e-12);
  c.qkv_bias = r.get<bool>("qkv_bias", true);
  c.hidden_act = r.get<std::string>("hidden_act", "gelu");
  c.pooler_act = r.get<std::string>("pooler_act", "tanh");
  c.pooler_output_size = r.dim("pooler_output_size", c.hidden_size, ConfigLimits::kWidth);
  c.num_labels = num_labels_of(j, where);
  check_activation(c.hidden_act);
  check_activation(c.pooler_act);
  if (c.image_size % c.patch_size != 0) r.fail("image_size is not a multiple of patch_size");
  return c;
}

void check_activation(const std::string& name) {
  static const char* known[] = {"gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "silu", "swish", "relu", "tanh",
                                "quick_gelu"};
  for (const char* k : known)
    if (name == k) return;
  throw std::runtime_error("unsupported activation function '" + name + "'");
}

}  // namespace peft
