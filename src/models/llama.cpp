#include "models/llama.h"

#include <ATen/ATen.h>

#include <cmath>

#include "models/checkpoint.h"
#include "models/config_reader.h"
#include "models/fused_ops.h"

namespace peft {


LlamaAttention::LlamaAttention(const LlamaConfig& c, bool rotary)
    : arch_(c.arch), rotary_(rotary), heads_(c.num_heads), kv_heads_(c.num_kv_heads), head_dim_(c.head_dim),
      scale_(c.attention_multiplier > 0 ? c.attention_multiplier : 1.0 / std::sqrt(static_cast<double>(head_dim_))) {
  q_proj = register_module("q_proj", std::make_shared<Linear>(c.hidden_size, heads_ * head_dim_, c.qkv_bias));
  k_proj = register_module("k_proj", std::make_shared<Linear>(c.hidden_size, kv_heads_ * head_dim_, c.qkv_bias));
  v_proj = register_module("v_proj", std::make_shared<Linear>(c.hidden_size, kv_heads_ * head_dim_, c.qkv_bias));
  o_proj = register_module("o_proj", std::make_shared<Linear>(heads_ * head_dim_, c.hidden_size, c.o_bias));
  if (c.qk_norm) {
    q_norm = register_module("q_norm", std::make_shared<RMSNorm>(head_dim_, c.rms_norm_eps, c.arch + "RMSNorm"));
    k_norm = register_module("k_norm", std::make_shared<RMSNorm>(head_dim_, c.rms_norm_eps, c.arch + "RMSNorm"));
  }
}

at::Tensor LlamaAttention::forward(const at::Tensor& h, const RotaryEmbedding::Angles& rope, const at::Tensor& mask,
                                   KVCache* cache, size_t layer) {
  auto q = q_proj->forward(h);
  auto k = k_proj->forward(h);
  if (q_norm) {  // over each head's features, before the rotation
    q = q_norm->forward(q.view({q.size(0), q.size(1), heads_, head_dim_})).flatten(2);
    k = k_norm->forward(k.view({k.size(0), k.size(1), kv_heads_, head_dim_})).flatten(2);
  }
  q = split_heads(q, heads_, head_dim_);
  k = split_heads(k, kv_heads_, head_dim_);
  auto v = split_heads(v_proj->forward(h), kv_heads_, head_dim_);
  if (rotary_) RotaryEmbedding::apply(q, k, rope);
  update_cache(cache, layer, k, v);
  return extended(o_proj->forward(attend(q, k, v, mask, scale_, /*is_causal=*/true)), h, q);
}

LlamaMLP::LlamaMLP(const LlamaConfig& c) : arch_(c.arch), act_(c.hidden_act) {
  gate_proj = register_module("gate_proj", std::make_shared<Linear>(c.hidden_size, c.intermediate_size, c.mlp_bias));
  up_proj = register_module("up_proj", std::make_shared<Linear>(c.hidden_size, c.intermediate_size, c.mlp_bias));
  down_proj = register_module("down_proj", std::make_shared<Linear>(c.intermediate_size, c.hidden_size, c.mlp_bias));
}

at::Tensor LlamaMLP::base_forward(const at::Tensor& x) {
  auto gate = gate_proj->forward(x), up = up_proj->forward(x);
  // Under bf16 autocast one fused pass (and one backward pass) for silu(gate) * up.
  if ((act_ == "silu" || act_ == "swish") && fused::bf16_autocast_cpu(gate) && gate.scalar_type() == at::kBFloat16 &&
      up.scalar_type() == at::kBFloat16)
    return down_proj->forward(fused::silu_mul_bf16(gate, up));
  return down_proj->forward(activation(act_, gate) * up);
}

LlamaDecoderLayer::LlamaDecoderLayer(const LlamaConfig& c, size_t index)
    : arch_(c.arch), sliding_(c.sliding.at(index)), residual_multiplier_(c.residual_multiplier) {
  const std::string norm = c.arch + "RMSNorm";
  self_attn = register_module("self_attn", std::make_shared<LlamaAttention>(c, index >= c.no_rope.size() || !c.no_rope[index]));
  mlp = register_module("mlp", std::make_shared<LlamaMLP>(c));
  input_layernorm = register_module("input_layernorm", std::make_shared<RMSNorm>(c.hidden_size, c.rms_norm_eps, norm));
  post_attention_layernorm =
      register_module("post_attention_layernorm", std::make_shared<RMSNorm>(c.hidden_size, c.rms_norm_eps, norm));
}

at::Tensor LlamaDecoderLayer::forward(const at::Tensor& h, const RotaryEmbedding::Angles& rope, const at::Tensor& mask,
                                      KVCache* cache, size_t layer) {
  auto a = self_attn->forward(input_layernorm->forward(h), rope, mask, cache, layer);
  if (residual_multiplier_ != 1.0) {  // Granite
    auto x = h + a * residual_multiplier_;
    return x + mlp->forward(post_attention_layernorm->forward(x)) * residual_multiplier_;
  }
  auto x = h + a;
  return x + mlp->forward(post_attention_layernorm->forward(x));
}

LlamaModel::LlamaModel(const LlamaConfig& c)
    : arch_(c.arch), rope_(c.rope, c.head_dim, c.max_position_embeddings), sliding_window_(c.sliding_window),
      embedding_multiplier_(c.embedding_multiplier) {
  embed_tokens = register_module("embed_tokens", std::make_shared<Embedding>(c.vocab_size, c.hidden_size));
  layers = register_module("layers", std::make_shared<ModuleList<LlamaDecoderLayer>>());
  for (int64_t i = 0; i < c.num_layers; ++i) layers->push_back(std::make_shared<LlamaDecoderLayer>(c, static_cast<size_t>(i)));
  norm = register_module("norm", std::make_shared<RMSNorm>(c.hidden_size, c.rms_norm_eps, c.arch + "RMSNorm"));
}

at::Tensor LlamaModel::forward(const ModelInputs& in) {
  auto h = in.inputs_embeds.defined() ? in.inputs_embeds : embed_tokens->forward(in.input_ids);
  if (embedding_multiplier_ != 1.0) h = h * embedding_multiplier_;  // Granite, soft prompts included
  KVCache* cache = in.cache;
  auto step = begin_decoder_step(in, layers->size(), h.device());
  const auto angles = rope_.angles(step.positions, h.scalar_type(), h.device());
  for (size_t i = 0; i < layers->size(); ++i) {
    auto& layer = (*layers)[i];
    const auto& mask = layer.sliding() ? step.window_mask(in, sliding_window_, h.device()) : step.mask;
    if (in.before_layer) h = in.before_layer(i, h);
    if (in.checkpoint_layers && !cache)
      h = checkpointed([&layer, angles, mask, i](const at::Tensor& x) { return layer.forward(x, angles, mask, nullptr, i); }, h);
    else
      h = layer.forward(h, angles, mask, cache, i);
    if (in.after_layer) h = in.after_layer(i, h);
  }
  return norm->forward(h);
}

LlamaForCausalLM::LlamaForCausalLM(const nlohmann::json& j, const std::string& arch, const std::string& where)
    : LlamaForCausalLM(j, LlamaConfig::from_json(j, arch, where)) {}

LlamaForCausalLM::LlamaForCausalLM(const nlohmann::json& j, LlamaConfig cfg)
    : CausalLMBase(j, cfg.tie_word_embeddings), cfg_(std::move(cfg)) {
  model = register_module("model", std::make_shared<LlamaModel>(cfg_));
  add_lm_head(cfg_.hidden_size, cfg_.vocab_size);
}

ModelOutputs LlamaForCausalLM::run(const ModelInputs& in) {
  if (cfg_.logits_scaling == 1.0) return CausalLMBase::run(in);
  ModelOutputs out;
  out.last_hidden_state = body_forward(in);
  out.logits = lm_head->forward(out.last_hidden_state) / cfg_.logits_scaling;  // Granite
  return out;
}

LlamaForSequenceClassification::LlamaForSequenceClassification(const nlohmann::json& j, const std::string& arch,
                                                               const std::string& where)
    : LlamaForSequenceClassification(j, where, LlamaConfig::from_json(j, arch, where)) {}

LlamaForSequenceClassification::LlamaForSequenceClassification(const nlohmann::json& j, const std::string& where,
                                                               LlamaConfig cfg)
    : DecoderClassifierBase(j, where), cfg_(std::move(cfg)) {
  model = register_module("model", std::make_shared<LlamaModel>(cfg_));
  add_score(cfg_.hidden_size);
}

}  // namespace peft
