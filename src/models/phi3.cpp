#include "models/phi3.h"

#include <ATen/ATen.h>

#include <cmath>

#include "models/checkpoint.h"

namespace peft {

Phi3Attention::Phi3Attention(const LlamaConfig& c)
    : heads_(c.num_heads), kv_heads_(c.num_kv_heads), head_dim_(c.head_dim) {
  o_proj = register_module("o_proj", std::make_shared<Linear>(heads_ * head_dim_, c.hidden_size, false));
  qkv_proj = register_module("qkv_proj",
                             std::make_shared<Linear>(c.hidden_size, (heads_ + 2 * kv_heads_) * head_dim_, false));
}

at::Tensor Phi3Attention::forward(const at::Tensor& h, const RotaryEmbedding::Angles& rope, const at::Tensor& mask,
                                  KVCache* cache, size_t layer) {
  auto qkv = qkv_proj->forward(h);
  const int64_t nq = heads_ * head_dim_, nkv = kv_heads_ * head_dim_;
  auto q = split_heads(qkv.narrow(-1, 0, nq).contiguous(), heads_, head_dim_);
  auto k = split_heads(qkv.narrow(-1, nq, nkv).contiguous(), kv_heads_, head_dim_);
  auto v = split_heads(qkv.narrow(-1, nq + nkv, nkv).contiguous(), kv_heads_, head_dim_);
  RotaryEmbedding::apply(q, k, rope);
  update_cache(cache, layer, k, v);
  return o_proj->forward(attend(q, k, v, mask, 1.0 / std::sqrt(static_cast<double>(head_dim_)), /*is_causal=*/true));
}

Phi3MLP::Phi3MLP(const LlamaConfig& c) : act_(c.hidden_act) {
  gate_up_proj = register_module("gate_up_proj", std::make_shared<Linear>(c.hidden_size, 2 * c.intermediate_size, false));
  down_proj = register_module("down_proj", std::make_shared<Linear>(c.intermediate_size, c.hidden_size, false));
}

at::Tensor Phi3MLP::base_forward(const at::Tensor& x) {
  auto gate_up = gate_up_proj->forward(x).chunk(2, -1);
  return down_proj->forward(gate_up[1] * activation(act_, gate_up[0]));
}

Phi3DecoderLayer::Phi3DecoderLayer(const LlamaConfig& c) {
  self_attn = register_module("self_attn", std::make_shared<Phi3Attention>(c));
  mlp = register_module("mlp", std::make_shared<Phi3MLP>(c));
  input_layernorm = register_module("input_layernorm", std::make_shared<RMSNorm>(c.hidden_size, c.rms_norm_eps, "Phi3RMSNorm"));
  post_attention_layernorm =
      register_module("post_attention_layernorm", std::make_shared<RMSNorm>(c.hidden_size, c.rms_norm_eps, "Phi3RMSNorm"));
}

at::Tensor Phi3DecoderLayer::forward(const at::Tensor& h, const RotaryEmbedding::Angles& rope, const at::Tensor& mask,
                                     KVCache* cache, size_t layer) {
  auto x = h + self_attn->forward(input_layernorm->forward(h), rope, mask, cache, layer);
  return x + mlp->forward(post_attention_layernorm->forward(x));
}

Phi3Model::Phi3Model(const LlamaConfig& c)
    : rope_(c.rope, c.head_dim, c.max_position_embeddings), sliding_window_(c.sliding_window) {
  embed_tokens = register_module("embed_tokens", std::make_shared<Embedding>(c.vocab_size, c.hidden_size));
  layers = register_module("layers", std::make_shared<ModuleList<Phi3DecoderLayer>>());
  for (int64_t i = 0; i < c.num_layers; ++i) layers->push_back(std::make_shared<Phi3DecoderLayer>(c));
  norm = register_module("norm", std::make_shared<RMSNorm>(c.hidden_size, c.rms_norm_eps, "Phi3RMSNorm"));
}

at::Tensor Phi3Model::forward(const ModelInputs& in) {
  auto h = in.inputs_embeds.defined() ? in.inputs_embeds : embed_tokens->forward(in.input_ids);
  auto step = begin_decoder_step(in, layers->size(), h.device());
  const auto mask = sliding_window_ > 0 ? step.window_mask(in, sliding_window_, h.device()) : step.mask;
  const auto angles = rope_.angles(step.positions, h.scalar_type(), h.device());
  h = run_decoder_blocks(layers->size(), h, in, [this, angles, mask](size_t i, const at::Tensor& x, KVCache* c) {
    return (*layers)[i].forward(x, angles, mask, c, i);
  });
  return norm->forward(h);
}

Phi3ForCausalLM::Phi3ForCausalLM(const nlohmann::json& j, const std::string& where)
    : Phi3ForCausalLM(j, LlamaConfig::from_json(j, "Phi3", where)) {}

Phi3ForCausalLM::Phi3ForCausalLM(const nlohmann::json& j, LlamaConfig cfg)
    : CausalLMBase(j, cfg.tie_word_embeddings), cfg_(std::move(cfg)) {
  model = register_module("model", std::make_shared<Phi3Model>(cfg_));
  add_lm_head(cfg_.hidden_size, cfg_.vocab_size);
}

}  // namespace peft
