#include "models/starcoder2.h"

#include <ATen/ATen.h>

#include <cmath>

#include "models/checkpoint.h"
#include "models/seq_cls_head.h"
#include "models/config_reader.h"
#include "models/model_config.h"

namespace peft {

Starcoder2Config Starcoder2Config::from_json(const nlohmann::json& j, const std::string& where) {
  ConfigReader r(j, where);
  Starcoder2Config c;
  c.vocab_size = r.dim("vocab_size", 49152, ConfigLimits::kVocab);
  c.hidden_size = r.dim("hidden_size", 3072, ConfigLimits::kWidth);
  c.intermediate_size = r.dim("intermediate_size", 12288, ConfigLimits::kWidth);
  c.num_layers = r.dim("num_hidden_layers", 30, ConfigLimits::kLayers);
  c.num_heads = r.dim("num_attention_heads", 24, ConfigLimits::kHeads);
  c.num_kv_heads = r.dim("num_key_value_heads", 2, ConfigLimits::kHeads);
  c.max_position_embeddings = r.dim("max_position_embeddings", 4096, ConfigLimits::kPositions);
  c.sliding_window = r.has("sliding_window") ? r.dim("sliding_window", std::nullopt, ConfigLimits::kPositions) : 0;
  c.norm_epsilon = r.positive("norm_epsilon", 1e-5);
  c.hidden_act = r.get<std::string>("hidden_act", "gelu_pytorch_tanh");
  check_activation(c.hidden_act);
  c.use_bias = r.get<bool>("use_bias", true);
  c.tie_word_embeddings = r.get<bool>("tie_word_embeddings", true);
  if (c.hidden_size % c.num_heads != 0) r.fail("hidden_size is not a multiple of num_attention_heads");
  if (c.num_heads % c.num_kv_heads != 0) r.fail("num_attention_heads is not a multiple of num_key_value_heads");
  c.head_dim = c.hidden_size / c.num_heads;
  c.rope = read_rope_parameters(r, "rope_theta", 10000.0);
  return c;
}

Starcoder2Attention::Starcoder2Attention(const Starcoder2Config& c)
    : heads_(c.num_heads), kv_heads_(c.num_kv_heads), head_dim_(c.head_dim) {
  q_proj = register_module("q_proj", std::make_shared<Linear>(c.hidden_size, heads_ * head_dim_, c.use_bias));
  k_proj = register_module("k_proj", std::make_shared<Linear>(c.hidden_size, kv_heads_ * head_dim_, c.use_bias));
  v_proj = register_module("v_proj", std::make_shared<Linear>(c.hidden_size, kv_heads_ * head_dim_, c.use_bias));
  o_proj = register_module("o_proj", std::make_shared<Linear>(heads_ * head_dim_, c.hidden_size, c.use_bias));
}

at::Tensor Starcoder2Attention::forward(const at::Tensor& h, const RotaryEmbedding::Angles& rope, const at::Tensor& mask,
                                        KVCache* cache, size_t layer) {
  auto q = split_heads(q_proj->forward(h), heads_, head_dim_);
  auto k = split_heads(k_proj->forward(h), kv_heads_, head_dim_);
  auto v = split_heads(v_proj->forward(h), kv_heads_, head_dim_);
  RotaryEmbedding::apply(q, k, rope);
  update_cache(cache, layer, k, v);
  return o_proj->forward(attend(q, k, v, mask, 1.0 / std::sqrt(static_cast<double>(head_dim_)), /*is_causal=*/true));
}

Starcoder2MLP::Starcoder2MLP(const Starcoder2Config& c) : act_(c.hidden_act) {
  c_fc = register_module("c_fc", std::make_shared<Linear>(c.hidden_size, c.intermediate_size, c.use_bias));
  c_proj = register_module("c_proj", std::make_shared<Linear>(c.intermediate_size, c.hidden_size, c.use_bias));
}

at::Tensor Starcoder2MLP::base_forward(const at::Tensor& x) { return c_proj->forward(activation(act_, c_fc->forward(x))); }

Starcoder2DecoderLayer::Starcoder2DecoderLayer(const Starcoder2Config& c) {
  self_attn = register_module("self_attn", std::make_shared<Starcoder2Attention>(c));
  mlp = register_module("mlp", std::make_shared<Starcoder2MLP>(c));
  input_layernorm = register_module("input_layernorm", std::make_shared<LayerNorm>(c.hidden_size, c.norm_epsilon));
  post_attention_layernorm =
      register_module("post_attention_layernorm", std::make_shared<LayerNorm>(c.hidden_size, c.norm_epsilon));
}

at::Tensor Starcoder2DecoderLayer::forward(const at::Tensor& h, const RotaryEmbedding::Angles& rope,
                                           const at::Tensor& mask, KVCache* cache, size_t layer) {
  auto x = h + self_attn->forward(input_layernorm->forward(h), rope, mask, cache, layer);
  return x + mlp->forward(post_attention_layernorm->forward(x));
}

Starcoder2Model::Starcoder2Model(const Starcoder2Config& c)
    : rope_(c.rope, c.head_dim, c.max_position_embeddings), sliding_window_(c.sliding_window) {
  embed_tokens = register_module("embed_tokens", std::make_shared<Embedding>(c.vocab_size, c.hidden_size));
  layers = register_module("layers", std::make_shared<ModuleList<Starcoder2DecoderLayer>>());
  for (int64_t i = 0; i < c.num_layers; ++i) layers->push_back(std::make_shared<Starcoder2DecoderLayer>(c));
  norm = register_module("norm", std::make_shared<LayerNorm>(c.hidden_size, c.norm_epsilon));
}

at::Tensor Starcoder2Model::forward(const ModelInputs& in) {
  auto h = in.inputs_embeds.defined() ? in.inputs_embeds : embed_tokens->forward(in.input_ids);
  auto step = begin_decoder_step(in, layers->size(), h.device());
  const auto mask = sliding_window_ > 0 ? step.window_mask(in, sliding_window_, h.device()) : step.mask;
  const auto angles = rope_.angles(step.positions, h.scalar_type(), h.device());
  h = run_decoder_blocks(layers->size(), h, in, [this, angles, mask](size_t i, const at::Tensor& x, KVCache* c) {
    return (*layers)[i].forward(x, angles, mask, c, i);
  });
  return norm->forward(h);
}

Starcoder2ForCausalLM::Starcoder2ForCausalLM(const nlohmann::json& j, const std::string& where)
    : Starcoder2ForCausalLM(j, Starcoder2Config::from_json(j, where)) {}

Starcoder2ForCausalLM::Starcoder2ForCausalLM(const nlohmann::json& j, Starcoder2Config cfg)
    : CausalLMBase(j, cfg.tie_word_embeddings), cfg_(std::move(cfg)) {
  model = register_module("model", std::make_shared<Starcoder2Model>(cfg_));
  add_lm_head(cfg_.hidden_size, cfg_.vocab_size);
}

std::shared_ptr<Model> make_starcoder2_classifier(const nlohmann::json& j, const std::string& where) {
  auto c = Starcoder2Config::from_json(j, where);
  return std::make_shared<DecoderForSequenceClassification<Starcoder2Model>>(j, where, "Starcoder2ForSequenceClassification", "model",
                                                                     std::make_shared<Starcoder2Model>(c), c.hidden_size,
                                                                     c.num_layers);
}

}  // namespace peft
