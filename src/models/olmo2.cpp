#include "models/olmo2.h"

#include <ATen/ATen.h>

#include <cmath>

#include "models/checkpoint.h"
#include "models/seq_cls_head.h"
#include "models/config_reader.h"

namespace peft {

namespace {
// Olmo2Config: LLaMA's keys, rms_norm_eps defaulting to 1e-5.
LlamaConfig olmo2_config(const nlohmann::json& j, const std::string& where) {
  LlamaConfig c = LlamaConfig::from_json(j, "Olmo2", where);
  c.rms_norm_eps = ConfigReader(j, where).positive("rms_norm_eps", 1e-5);
  return c;
}
}  // namespace

Olmo2Attention::Olmo2Attention(const LlamaConfig& c)
    : heads_(c.num_heads), kv_heads_(c.num_kv_heads), head_dim_(c.head_dim) {
  q_proj = register_module("q_proj", std::make_shared<Linear>(c.hidden_size, heads_ * head_dim_, c.qkv_bias));
  k_proj = register_module("k_proj", std::make_shared<Linear>(c.hidden_size, kv_heads_ * head_dim_, c.qkv_bias));
  v_proj = register_module("v_proj", std::make_shared<Linear>(c.hidden_size, kv_heads_ * head_dim_, c.qkv_bias));
  o_proj = register_module("o_proj", std::make_shared<Linear>(heads_ * head_dim_, c.hidden_size, c.o_bias));
  q_norm = register_module("q_norm", std::make_shared<RMSNorm>(heads_ * head_dim_, c.rms_norm_eps, "Olmo2RMSNorm"));
  k_norm = register_module("k_norm", std::make_shared<RMSNorm>(kv_heads_ * head_dim_, c.rms_norm_eps, "Olmo2RMSNorm"));
}

at::Tensor Olmo2Attention::forward(const at::Tensor& h, const RotaryEmbedding::Angles& rope, const at::Tensor& mask,
                                   KVCache* cache, size_t layer) {
  auto q = split_heads(q_norm->forward(q_proj->forward(h)), heads_, head_dim_);
  auto k = split_heads(k_norm->forward(k_proj->forward(h)), kv_heads_, head_dim_);
  auto v = split_heads(v_proj->forward(h), kv_heads_, head_dim_);
  RotaryEmbedding::apply(q, k, rope);
  update_cache(cache, layer, k, v);
  return o_proj->forward(attend(q, k, v, mask, 1.0 / std::sqrt(static_cast<double>(head_dim_)), /*is_causal=*/true));
}

Olmo2DecoderLayer::Olmo2DecoderLayer(const LlamaConfig& c) {
  self_attn = register_module("self_attn", std::make_shared<Olmo2Attention>(c));
  mlp = register_module("mlp", std::make_shared<LlamaMLP>(c));
  post_attention_layernorm =
      register_module("post_attention_layernorm", std::make_shared<RMSNorm>(c.hidden_size, c.rms_norm_eps, "Olmo2RMSNorm"));
  post_feedforward_layernorm =
      register_module("post_feedforward_layernorm", std::make_shared<RMSNorm>(c.hidden_size, c.rms_norm_eps, "Olmo2RMSNorm"));
}

at::Tensor Olmo2DecoderLayer::forward(const at::Tensor& h, const RotaryEmbedding::Angles& rope, const at::Tensor& mask,
                                      KVCache* cache, size_t layer) {
  auto x = h + post_attention_layernorm->forward(self_attn->forward(h, rope, mask, cache, layer));
  return x + post_feedforward_layernorm->forward(mlp->forward(x));
}

Olmo2Model::Olmo2Model(const LlamaConfig& c) : rope_(c.rope, c.head_dim, c.max_position_embeddings) {
  embed_tokens = register_module("embed_tokens", std::make_shared<Embedding>(c.vocab_size, c.hidden_size));
  layers = register_module("layers", std::make_shared<ModuleList<Olmo2DecoderLayer>>());
  for (int64_t i = 0; i < c.num_layers; ++i) layers->push_back(std::make_shared<Olmo2DecoderLayer>(c));
  norm = register_module("norm", std::make_shared<RMSNorm>(c.hidden_size, c.rms_norm_eps, "Olmo2RMSNorm"));
}

at::Tensor Olmo2Model::forward(const ModelInputs& in) {
  auto h = in.inputs_embeds.defined() ? in.inputs_embeds : embed_tokens->forward(in.input_ids);
  const auto step = begin_decoder_step(in, layers->size(), h.device());
  const auto angles = rope_.angles(step.positions, h.scalar_type(), h.device());
  h = run_decoder_blocks(layers->size(), h, in,
                         [this, angles, mask = step.mask](size_t i, const at::Tensor& x, KVCache* c) {
                           return (*layers)[i].forward(x, angles, mask, c, i);
                         });
  return norm->forward(h);
}

Olmo2ForCausalLM::Olmo2ForCausalLM(const nlohmann::json& j, const std::string& where)
    : Olmo2ForCausalLM(j, olmo2_config(j, where)) {}

Olmo2ForCausalLM::Olmo2ForCausalLM(const nlohmann::json& j, LlamaConfig cfg)
    : CausalLMBase(j, cfg.tie_word_embeddings), cfg_(std::move(cfg)) {
  model = register_module("model", std::make_shared<Olmo2Model>(cfg_));
  add_lm_head(cfg_.hidden_size, cfg_.vocab_size);
}

std::shared_ptr<Model> make_olmo2_classifier(const nlohmann::json& j, const std::string& where) {
  auto c = olmo2_config(j, where);
  return std::make_shared<DecoderForSequenceClassification<Olmo2Model>>(
      j, where, "Olmo2ForSequenceClassification", "model", std::make_shared<Olmo2Model>(c), c.hidden_size, c.num_layers);
}

}  // namespace peft
