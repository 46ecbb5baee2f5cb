#include "models/gemma.h"

#include <ATen/ATen.h>

#include <cmath>

#include "models/checkpoint.h"
#include "models/seq_cls_head.h"

namespace peft {

at::Tensor GemmaRMSNorm::base_forward(const at::Tensor& x) {
  auto h = x.to(at::kFloat);
  h = h * at::rsqrt(h.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return (h * (1.0 + weight.to(at::kFloat))).to(x.scalar_type());
}

GemmaScaledEmbedding::GemmaScaledEmbedding(int64_t n, int64_t d, std::string type)
    : Embedding(n, d), type_(std::move(type)), scale_(static_cast<float>(std::sqrt(static_cast<double>(d)))) {}

at::Tensor GemmaScaledEmbedding::forward_with_weight(const at::Tensor& ids, const at::Tensor& table) {
  auto scale = at::scalar_tensor(scale_, table.options().dtype(at::kFloat)).to(table.scalar_type());
  at::Tensor out = at::embedding(table, ids) * scale;
  return compute_dtype && *compute_dtype != out.scalar_type() ? out.to(*compute_dtype) : out;
}

GemmaAttention::GemmaAttention(const GemmaConfig& c)
    : arch_(c.arch), heads_(c.num_heads), kv_heads_(c.num_kv_heads), head_dim_(c.head_dim),
      scale_(std::pow(c.query_pre_attn_scalar, -0.5)), softcap_(c.attn_softcap) {
  q_proj = register_module("q_proj", std::make_shared<Linear>(c.hidden_size, heads_ * head_dim_, c.qkv_bias));
  k_proj = register_module("k_proj", std::make_shared<Linear>(c.hidden_size, kv_heads_ * head_dim_, c.qkv_bias));
  v_proj = register_module("v_proj", std::make_shared<Linear>(c.hidden_size, kv_heads_ * head_dim_, c.qkv_bias));
  o_proj = register_module("o_proj", std::make_shared<Linear>(heads_ * head_dim_, c.hidden_size, c.o_bias));
  if (c.arch == "Gemma3") {
    q_norm = register_module("q_norm", std::make_shared<GemmaRMSNorm>(head_dim_, c.rms_norm_eps, c.arch + "RMSNorm"));
    k_norm = register_module("k_norm", std::make_shared<GemmaRMSNorm>(head_dim_, c.rms_norm_eps, c.arch + "RMSNorm"));
  }
}

at::Tensor GemmaAttention::forward(const at::Tensor& h, const RotaryEmbedding::Angles& rope, const at::Tensor& mask,
                                   KVCache* cache, size_t layer) {
  auto q = split_heads(q_proj->forward(h), heads_, head_dim_);
  auto k = split_heads(k_proj->forward(h), kv_heads_, head_dim_);
  auto v = split_heads(v_proj->forward(h), kv_heads_, head_dim_);
  if (q_norm) {
    q = q_norm->forward(q);
    k = k_norm->forward(k);
  }
  RotaryEmbedding::apply(q, k, rope);
  update_cache(cache, layer, k, v);
  // SDPA cannot soft-cap scores: the eager product then, as transformers requires.
  auto out = softcap_ ? attend_eager(q, k, v, mask, scale_, softcap_) : attend(q, k, v, mask, scale_, /*is_causal=*/true);
  return o_proj->forward(out);
}

GemmaDecoderLayer::GemmaDecoderLayer(const GemmaConfig& c, bool sliding) : arch_(c.arch), sliding_(sliding) {
  const std::string norm = c.arch + "RMSNorm";
  auto make_norm = [&] { return std::make_shared<GemmaRMSNorm>(c.hidden_size, c.rms_norm_eps, norm); };
  self_attn = register_module("self_attn", std::make_shared<GemmaAttention>(c));
  mlp = register_module("mlp", std::make_shared<LlamaMLP>(c));
  input_layernorm = register_module("input_layernorm", make_norm());
  post_attention_layernorm = register_module("post_attention_layernorm", make_norm());
  if (c.arch == "Gemma") return;
  pre_feedforward_layernorm = register_module("pre_feedforward_layernorm", make_norm());
  post_feedforward_layernorm = register_module("post_feedforward_layernorm", make_norm());
}

at::Tensor GemmaDecoderLayer::forward(const at::Tensor& h, const RotaryEmbedding::Angles& rope, const at::Tensor& mask,
                                      KVCache* cache, size_t layer) {
  auto a = self_attn->forward(input_layernorm->forward(h), rope, mask, cache, layer);
  if (!pre_feedforward_layernorm) {  // Gemma 1: LLaMA's block
    auto x = h + a;
    return x + mlp->forward(post_attention_layernorm->forward(x));
  }
  auto x = h + post_attention_layernorm->forward(a);
  return x + post_feedforward_layernorm->forward(mlp->forward(pre_feedforward_layernorm->forward(x)));
}

GemmaModel::GemmaModel(const GemmaConfig& c)
    : arch_(c.arch),
      rope_global_(c.rope, c.head_dim, c.max_position_embeddings),
      rope_local_(c.rope_local, c.head_dim, c.max_position_embeddings),
      sliding_window_(c.sliding_window) {
  embed_tokens = register_module(
      "embed_tokens", std::make_shared<GemmaScaledEmbedding>(c.vocab_size, c.hidden_size, c.arch + "TextScaledWordEmbedding"));
  layers = register_module("layers", std::make_shared<ModuleList<GemmaDecoderLayer>>());
  for (int64_t i = 0; i < c.num_layers; ++i) layers->push_back(std::make_shared<GemmaDecoderLayer>(c, c.sliding[i]));
  norm = register_module("norm", std::make_shared<GemmaRMSNorm>(c.hidden_size, c.rms_norm_eps, c.arch + "RMSNorm"));
}

at::Tensor GemmaModel::forward(const ModelInputs& in) {
  auto h = in.inputs_embeds.defined() ? in.inputs_embeds : embed_tokens->forward(in.input_ids);
  KVCache* cache = in.cache;
  auto step = begin_decoder_step(in, layers->size(), h.device());
  const auto global = rope_global_.angles(step.positions, h.scalar_type(), h.device());
  const auto local = rope_local_.angles(step.positions, h.scalar_type(), h.device());
  for (size_t i = 0; i < layers->size(); ++i) {
    auto& layer = (*layers)[i];
    const auto& mask = layer.sliding() ? step.window_mask(in, sliding_window_, h.device()) : step.mask;
    const auto& angles = layer.sliding() ? local : global;
    if (in.checkpoint_layers && !cache)
      h = checkpointed([&layer, angles, mask, i](const at::Tensor& x) { return layer.forward(x, angles, mask, nullptr, i); }, h);
    else
      h = layer.forward(h, angles, mask, cache, i);
  }
  return norm->forward(h);
}

GemmaForCausalLM::GemmaForCausalLM(const nlohmann::json& j, const std::string& arch, const std::string& where)
    : GemmaForCausalLM(j, GemmaConfig::from_json(j, arch, where)) {}

GemmaForCausalLM::GemmaForCausalLM(const nlohmann::json& j, GemmaConfig cfg)
    : CausalLMBase(j, cfg.tie_word_embeddings), cfg_(std::move(cfg)) {
  model = register_module("model", std::make_shared<GemmaModel>(cfg_));
  add_lm_head(cfg_.hidden_size, cfg_.vocab_size);
}

ModelOutputs GemmaForCausalLM::run(const ModelInputs& in) {
  ModelOutputs out;
  out.last_hidden_state = body_forward(in);
  if (in.skip_logits && !cfg_.final_softcap) return out;
  out.logits = lm_head->forward(out.last_hidden_state);
  if (cfg_.final_softcap) out.logits = at::tanh(out.logits / *cfg_.final_softcap) * *cfg_.final_softcap;
  return out;
}

std::shared_ptr<Model> make_gemma_classifier(const nlohmann::json& j, const std::string& arch, const std::string& where) {
  auto c = GemmaConfig::from_json(j, arch, where);
  return std::make_shared<DecoderForSequenceClassification<GemmaModel>>(
      j, where, arch + "ForSequenceClassification", "model", std::make_shared<GemmaModel>(c), c.hidden_size, c.num_layers);
}

}  // namespace peft
