#include "models/model_config.h"

#include <algorithm>
#include <stdexcept>

#include "models/config_reader.h"

namespace peft {

LlamaConfig LlamaConfig::from_json(const nlohmann::json& j, const std::string& arch, const std::string& where) {
  ConfigReader r(j, where);
  LlamaConfig c;
  c.arch = arch;
  c.vocab_size = r.dim("vocab_size", std::nullopt, ConfigLimits::kVocab);
  c.hidden_size = r.dim("hidden_size", std::nullopt, ConfigLimits::kWidth);
  c.intermediate_size = r.dim("intermediate_size", std::nullopt, ConfigLimits::kWidth);
  c.num_layers = r.dim("num_hidden_layers", std::nullopt, ConfigLimits::kLayers);
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
  if (r.get<bool>("use_sliding_window", false) && arch == "Qwen2") r.fail("use_sliding_window is not supported");
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
  static const char* known[] = {"gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "silu", "swish", "relu", "tanh"};
  for (const char* k : known)
    if (name == k) return;
  throw std::runtime_error("unsupported activation function '" + name + "'");
}

}  // namespace peft
