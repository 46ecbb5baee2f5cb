#include "models/stablelm.h"

#include <ATen/ATen.h>

#include <cmath>

#include "models/checkpoint.h"
#include "models/seq_cls_head.h"
#include "models/config_reader.h"
#include "models/model_config.h"

namespace peft {

StableLmConfig StableLmConfig::from_json(const nlohmann::json& j, const std::string& where) {
  ConfigReader r(j, where);
  StableLmConfig c;
  c.vocab_size = r.dim("vocab_size", 50304, ConfigLimits::kVocab);
  c.hidden_size = r.dim("hidden_size", 2560, ConfigLimits::kWidth);
  c.intermediate_size = r.dim("intermediate_size", 6912, ConfigLimits::kWidth);
  c.num_layers = r.dim("num_hidden_layers", 32, ConfigLimits::kLayers);
  c.num_heads = r.dim("num_attention_heads", 32, ConfigLimits::kHeads);
  c.num_kv_heads = r.dim("num_key_value_heads", 32, ConfigLimits::kHeads);
  c.max_position_embeddings = r.dim("max_position_embeddings", 4096, ConfigLimits::kPositions);
  c.layer_norm_eps = r.positive("layer_norm_eps", 1e-5);
  c.hidden_act = r.get<std::string>("hidden_act", "silu");
  check_activation(c.hidden_act);
  c.use_qkv_bias = r.get<bool>("use_qkv_bias", false);
  c.qk_layernorm = r.get<bool>("qk_layernorm", false);
  c.use_parallel_residual = r.get<bool>("use_parallel_residual", false);
  c.tie_word_embeddings = r.get<bool>("tie_word_embeddings", false);
  if (c.hidden_size % c.num_heads != 0) r.fail("hidden_size is not a multiple of num_attention_heads");
  if (c.num_heads % c.num_kv_heads != 0) r.fail("num_attention_heads is not a multiple of num_key_value_heads");
  c.head_dim = c.hidden_size / c.num_heads;
  // StableLmConfig: rope_parameters (or rope_scaling); the top-level rope_theta and
  // partial_rotary_factor (default 0.25) of older files fill what they lack.
  c.rope = read_rope_parameters(r, "rope_theta", 10000.0, "partial_rotary_factor", 0.25);
  return c;
}

StableLmLayerNormPerHead::Norm::Norm(int64_t dim, double eps) : eps_(eps) { register_parameter("weight", &weight, {dim}); }

StableLmLayerNormPerHead::StableLmLayerNormPerHead(int64_t dim, int64_t heads, double eps) {
  norms_ = register_module("norms", std::make_shared<ModuleList<Norm>>());
  for (int64_t i = 0; i < heads; ++i) norms_->push_back(std::make_shared<Norm>(dim, eps));
}

at::Tensor StableLmLayerNormPerHead::forward(const at::Tensor& x) {
  std::vector<at::Tensor> heads;
  for (size_t i = 0; i < norms_->size(); ++i) heads.push_back((*norms_)[i].forward(x.narrow(1, static_cast<int64_t>(i), 1)));
  return at::cat(heads, 1);
}

StableLmAttention::StableLmAttention(const StableLmConfig& c)
    : heads_(c.num_heads), kv_heads_(c.num_kv_heads), head_dim_(c.head_dim) {
  q_proj = register_module("q_proj", std::make_shared<Linear>(c.hidden_size, heads_ * head_dim_, c.use_qkv_bias));
  k_proj = register_module("k_proj", std::make_shared<Linear>(c.hidden_size, kv_heads_ * head_dim_, c.use_qkv_bias));
  v_proj = register_module("v_proj", std::make_shared<Linear>(c.hidden_size, kv_heads_ * head_dim_, c.use_qkv_bias));
  o_proj = register_module("o_proj", std::make_shared<Linear>(c.hidden_size, c.hidden_size, false));
  if (c.qk_layernorm) {
    q_layernorm = register_module("q_layernorm", std::make_shared<StableLmLayerNormPerHead>(head_dim_, heads_, c.layer_norm_eps));
    k_layernorm =
        register_module("k_layernorm", std::make_shared<StableLmLayerNormPerHead>(head_dim_, kv_heads_, c.layer_norm_eps));
  }
}

at::Tensor StableLmAttention::forward(const at::Tensor& h, const RotaryEmbedding::Angles& rope, const at::Tensor& mask,
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
  return o_proj->forward(attend(q, k, v, mask, 1.0 / std::sqrt(static_cast<double>(head_dim_)), /*is_causal=*/true));
}

StableLmMLP::StableLmMLP(const StableLmConfig& c) : act_(c.hidden_act) {
  gate_proj = register_module("gate_proj", std::make_shared<Linear>(c.hidden_size, c.intermediate_size, false));
  up_proj = register_module("up_proj", std::make_shared<Linear>(c.hidden_size, c.intermediate_size, false));
  down_proj = register_module("down_proj", std::make_shared<Linear>(c.intermediate_size, c.hidden_size, false));
}

at::Tensor StableLmMLP::base_forward(const at::Tensor& x) {
  return down_proj->forward(activation(act_, gate_proj->forward(x)) * up_proj->forward(x));
}

StableLmDecoderLayer::StableLmDecoderLayer(const StableLmConfig& c) {
  self_attn = register_module("self_attn", std::make_shared<StableLmAttention>(c));
  mlp = register_module("mlp", std::make_shared<StableLmMLP>(c));
  input_layernorm = register_module("input_layernorm", std::make_shared<LayerNorm>(c.hidden_size, c.layer_norm_eps));
  if (!c.use_parallel_residual)
    post_attention_layernorm =
        register_module("post_attention_layernorm", std::make_shared<LayerNorm>(c.hidden_size, c.layer_norm_eps));
}

at::Tensor StableLmDecoderLayer::forward(const at::Tensor& h, const RotaryEmbedding::Angles& rope,
                                         const at::Tensor& mask, KVCache* cache, size_t layer) {
  auto x = input_layernorm->forward(h);
  auto attn = self_attn->forward(x, rope, mask, cache, layer);
  if (!post_attention_layernorm) return h + attn + mlp->forward(x);  // parallel, transformers' order
  auto r = h + attn;
  return r + mlp->forward(post_attention_layernorm->forward(r));
}

StableLmModel::StableLmModel(const StableLmConfig& c)
    : rope_(c.rope, c.head_dim, c.max_position_embeddings, /*partial_ok=*/true) {
  embed_tokens = register_module("embed_tokens", std::make_shared<Embedding>(c.vocab_size, c.hidden_size));
  layers = register_module("layers", std::make_shared<ModuleList<StableLmDecoderLayer>>());
  for (int64_t i = 0; i < c.num_layers; ++i) layers->push_back(std::make_shared<StableLmDecoderLayer>(c));
  norm = register_module("norm", std::make_shared<LayerNorm>(c.hidden_size, c.layer_norm_eps));
}

at::Tensor StableLmModel::forward(const ModelInputs& in) {
  auto h = in.inputs_embeds.defined() ? in.inputs_embeds : embed_tokens->forward(in.input_ids);
  const auto step = begin_decoder_step(in, layers->size(), h.device());
  const auto angles = rope_.angles(step.positions, h.scalar_type(), h.device());
  h = run_decoder_blocks(layers->size(), h, in,
                         [this, angles, mask = step.mask](size_t i, const at::Tensor& x, KVCache* c) {
                           return (*layers)[i].forward(x, angles, mask, c, i);
                         });
  return norm->forward(h);
}

StableLmForCausalLM::StableLmForCausalLM(const nlohmann::json& j, const std::string& where)
    : StableLmForCausalLM(j, StableLmConfig::from_json(j, where)) {}

StableLmForCausalLM::StableLmForCausalLM(const nlohmann::json& j, StableLmConfig cfg)
    : CausalLMBase(j, cfg.tie_word_embeddings), cfg_(std::move(cfg)) {
  model = register_module("model", std::make_shared<StableLmModel>(cfg_));
  add_lm_head(cfg_.hidden_size, cfg_.vocab_size);
}

std::shared_ptr<Model> make_stablelm_classifier(const nlohmann::json& j, const std::string& where) {
  auto c = StableLmConfig::from_json(j, where);
  return std::make_shared<DecoderForSequenceClassification<StableLmModel>>(j, where, "StableLmForSequenceClassification", "model",
                                                                     std::make_shared<StableLmModel>(c), c.hidden_size,
                                                                     c.num_layers);
}

}  // namespace peft
