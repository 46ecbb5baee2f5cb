#include "models/phi.h"

#include <ATen/ATen.h>

#include <cmath>

#include "models/checkpoint.h"
#include "models/seq_cls_head.h"
#include "models/config_reader.h"
#include "models/model_config.h"

namespace peft {

PhiConfig PhiConfig::from_json(const nlohmann::json& j, const std::string& where) {
  ConfigReader r(j, where);
  PhiConfig c;
  c.vocab_size = r.dim("vocab_size", 51200, ConfigLimits::kVocab);
  c.hidden_size = r.dim("hidden_size", 2048, ConfigLimits::kWidth);
  c.num_layers = r.dim("num_hidden_layers", 24, ConfigLimits::kLayers);
  c.num_heads = r.dim("num_attention_heads", 32, ConfigLimits::kHeads);
  c.num_kv_heads = r.dim("num_key_value_heads", c.num_heads, ConfigLimits::kHeads);
  c.intermediate_size = r.dim("intermediate_size", 8192, ConfigLimits::kWidth);
  c.max_position_embeddings = r.dim("max_position_embeddings", 2048, ConfigLimits::kPositions);
  c.layer_norm_eps = r.positive("layer_norm_eps", 1e-5);
  c.hidden_act = r.get<std::string>("hidden_act", "gelu_new");
  check_activation(c.hidden_act);
  c.qk_layernorm = r.get<bool>("qk_layernorm", false);
  c.tie_word_embeddings = r.get<bool>("tie_word_embeddings", false);
  if (c.num_heads % c.num_kv_heads != 0) r.fail("num_attention_heads is not a multiple of num_key_value_heads");
  c.head_dim = r.dim("head_dim", c.hidden_size / c.num_heads, ConfigLimits::kWidth);
  if (c.qk_layernorm && c.head_dim != c.hidden_size / c.num_heads)
    r.fail("qk_layernorm with a head_dim other than hidden_size / num_attention_heads is not supported");
  // PhiConfig: rope_parameters (or rope_scaling); the top-level rope_theta and
  // partial_rotary_factor (default 0.5) of older files fill what they lack.
  c.rope = read_rope_parameters(r, "rope_theta", 10000.0, "partial_rotary_factor", 0.5);
  return c;
}

PhiAttention::PhiAttention(const PhiConfig& c)
    : heads_(c.num_heads), kv_heads_(c.num_kv_heads), head_dim_(c.head_dim) {
  q_proj = register_module("q_proj", std::make_shared<Linear>(c.hidden_size, heads_ * head_dim_, true));
  k_proj = register_module("k_proj", std::make_shared<Linear>(c.hidden_size, kv_heads_ * head_dim_, true));
  v_proj = register_module("v_proj", std::make_shared<Linear>(c.hidden_size, kv_heads_ * head_dim_, true));
  dense = register_module("dense", std::make_shared<Linear>(heads_ * head_dim_, c.hidden_size, true));
  if (c.qk_layernorm) {
    q_layernorm = register_module("q_layernorm", std::make_shared<LayerNorm>(head_dim_, c.layer_norm_eps));
    k_layernorm = register_module("k_layernorm", std::make_shared<LayerNorm>(head_dim_, c.layer_norm_eps));
  }
}

at::Tensor PhiAttention::forward(const at::Tensor& h, const RotaryEmbedding::Angles& rope, const at::Tensor& mask,
                                 KVCache* cache, size_t layer) {
  auto q = split_heads(q_proj->forward(h), heads_, head_dim_);
  auto k = split_heads(k_proj->forward(h), kv_heads_, head_dim_);
  auto v = split_heads(v_proj->forward(h), kv_heads_, head_dim_);
  if (q_layernorm) {
    q = q_layernorm->forward(q);
    k = k_layernorm->forward(k);
  }
  RotaryEmbedding::apply(q, k, rope);  // the first rotary dims; the rest pass through
  update_cache(cache, layer, k, v);
  return dense->forward(attend(q, k, v, mask, 1.0 / std::sqrt(static_cast<double>(head_dim_)), /*is_causal=*/true));
}

PhiMLP::PhiMLP(const PhiConfig& c) : act_(c.hidden_act) {
  fc1 = register_module("fc1", std::make_shared<Linear>(c.hidden_size, c.intermediate_size, true));
  fc2 = register_module("fc2", std::make_shared<Linear>(c.intermediate_size, c.hidden_size, true));
}

at::Tensor PhiMLP::base_forward(const at::Tensor& x) { return fc2->forward(activation(act_, fc1->forward(x))); }

PhiDecoderLayer::PhiDecoderLayer(const PhiConfig& c) {
  self_attn = register_module("self_attn", std::make_shared<PhiAttention>(c));
  mlp = register_module("mlp", std::make_shared<PhiMLP>(c));
  input_layernorm = register_module("input_layernorm", std::make_shared<LayerNorm>(c.hidden_size, c.layer_norm_eps));
}

at::Tensor PhiDecoderLayer::forward(const at::Tensor& h, const RotaryEmbedding::Angles& rope, const at::Tensor& mask,
                                    KVCache* cache, size_t layer) {
  auto x = input_layernorm->forward(h);
  return self_attn->forward(x, rope, mask, cache, layer) + mlp->forward(x) + h;  // transformers' order
}

PhiModel::PhiModel(const PhiConfig& c) : rope_(c.rope, c.head_dim, c.max_position_embeddings, /*partial_ok=*/true) {
  embed_tokens = register_module("embed_tokens", std::make_shared<Embedding>(c.vocab_size, c.hidden_size));
  layers = register_module("layers", std::make_shared<ModuleList<PhiDecoderLayer>>());
  for (int64_t i = 0; i < c.num_layers; ++i) layers->push_back(std::make_shared<PhiDecoderLayer>(c));
  final_layernorm = register_module("final_layernorm", std::make_shared<LayerNorm>(c.hidden_size, c.layer_norm_eps));
}

at::Tensor PhiModel::forward(const ModelInputs& in) {
  auto h = in.inputs_embeds.defined() ? in.inputs_embeds : embed_tokens->forward(in.input_ids);
  const auto step = begin_decoder_step(in, layers->size(), h.device());
  const auto angles = rope_.angles(step.positions, h.scalar_type(), h.device());
  h = run_decoder_blocks(layers->size(), h, in,
                         [this, angles, mask = step.mask](size_t i, const at::Tensor& x, KVCache* c) {
                           return (*layers)[i].forward(x, angles, mask, c, i);
                         });
  return final_layernorm->forward(h);
}

PhiForCausalLM::PhiForCausalLM(const nlohmann::json& j, const std::string& where)
    : PhiForCausalLM(j, PhiConfig::from_json(j, where)) {}

PhiForCausalLM::PhiForCausalLM(const nlohmann::json& j, PhiConfig cfg)
    : CausalLMBase(j, cfg.tie_word_embeddings), cfg_(std::move(cfg)) {
  model = register_module("model", std::make_shared<PhiModel>(cfg_));
  add_lm_head(cfg_.hidden_size, cfg_.vocab_size, /*bias=*/true);
}

std::shared_ptr<Model> make_phi_classifier(const nlohmann::json& j, const std::string& where) {
  auto c = PhiConfig::from_json(j, where);
  return std::make_shared<DecoderForSequenceClassification<PhiModel>>(j, where, "PhiForSequenceClassification", "model",
                                                                     std::make_shared<PhiModel>(c), c.hidden_size,
                                                                     c.num_layers);
}

}  // namespace peft
