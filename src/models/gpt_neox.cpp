#include "models/gpt_neox.h"

#include <ATen/ATen.h>

#include <cmath>

#include "models/checkpoint.h"
#include "models/seq_cls_head.h"
#include "models/config_reader.h"
#include "models/model_config.h"

namespace peft {

GPTNeoXConfig GPTNeoXConfig::from_json(const nlohmann::json& j, const std::string& where) {
  ConfigReader r(j, where);
  GPTNeoXConfig c;
  c.vocab_size = r.dim("vocab_size", 50432, ConfigLimits::kVocab);
  c.hidden_size = r.dim("hidden_size", 6144, ConfigLimits::kWidth);
  c.num_layers = r.dim("num_hidden_layers", 44, ConfigLimits::kLayers);
  c.num_heads = r.dim("num_attention_heads", 64, ConfigLimits::kHeads);
  c.intermediate_size = r.dim("intermediate_size", 24576, ConfigLimits::kWidth);
  c.max_position_embeddings = r.dim("max_position_embeddings", 2048, ConfigLimits::kPositions);
  c.layer_norm_eps = r.positive("layer_norm_eps", 1e-5);
  c.hidden_act = r.get<std::string>("hidden_act", "gelu");
  check_activation(c.hidden_act);
  c.use_parallel_residual = r.get<bool>("use_parallel_residual", true);
  c.attention_bias = r.get<bool>("attention_bias", true);
  c.tie_word_embeddings = r.get<bool>("tie_word_embeddings", false);
  if (c.hidden_size % c.num_heads != 0) r.fail("hidden_size is not a multiple of num_attention_heads");
  // GPTNeoXConfig: rope_parameters (or rope_scaling), with the v4 names rotary_emb_base
  // and rotary_pct (default 0.25) filling what they lack.
  c.rope = read_rope_parameters(r, "rotary_emb_base", 10000.0, "rotary_pct", 0.25);
  return c;
}

GPTNeoXAttention::GPTNeoXAttention(const GPTNeoXConfig& c)
    : heads_(c.num_heads), head_dim_(c.hidden_size / c.num_heads) {
  query_key_value = register_module("query_key_value",
                                    std::make_shared<Linear>(c.hidden_size, 3 * c.hidden_size, c.attention_bias));
  dense = register_module("dense", std::make_shared<Linear>(c.hidden_size, c.hidden_size, c.attention_bias));
}

at::Tensor GPTNeoXAttention::forward(const at::Tensor& h, const RotaryEmbedding::Angles& rope, const at::Tensor& mask,
                                     KVCache* cache, size_t layer) {
  // [b, s, heads * 3 * d] -> [b, heads, s, 3 * d]: each head's query, key, value in turn.
  auto qkv = query_key_value->forward(h).view({h.size(0), h.size(1), heads_, 3 * head_dim_}).transpose(1, 2);
  auto parts = qkv.chunk(3, -1);
  auto q = parts[0], k = parts[1], v = parts[2];
  RotaryEmbedding::apply(q, k, rope);
  update_cache(cache, layer, k, v);
  return dense->forward(attend(q, k, v, mask, 1.0 / std::sqrt(static_cast<double>(head_dim_)), /*is_causal=*/true));
}

GPTNeoXMLP::GPTNeoXMLP(const GPTNeoXConfig& c) : act_(c.hidden_act) {
  dense_h_to_4h = register_module("dense_h_to_4h", std::make_shared<Linear>(c.hidden_size, c.intermediate_size, true));
  dense_4h_to_h = register_module("dense_4h_to_h", std::make_shared<Linear>(c.intermediate_size, c.hidden_size, true));
}

at::Tensor GPTNeoXMLP::base_forward(const at::Tensor& x) {
  return dense_4h_to_h->forward(activation(act_, dense_h_to_4h->forward(x)));
}

GPTNeoXLayer::GPTNeoXLayer(const GPTNeoXConfig& c) : parallel_(c.use_parallel_residual) {
  input_layernorm = register_module("input_layernorm", std::make_shared<LayerNorm>(c.hidden_size, c.layer_norm_eps));
  post_attention_layernorm =
      register_module("post_attention_layernorm", std::make_shared<LayerNorm>(c.hidden_size, c.layer_norm_eps));
  attention = register_module("attention", std::make_shared<GPTNeoXAttention>(c));
  mlp = register_module("mlp", std::make_shared<GPTNeoXMLP>(c));
}

at::Tensor GPTNeoXLayer::forward(const at::Tensor& h, const RotaryEmbedding::Angles& rope, const at::Tensor& mask,
                                 KVCache* cache, size_t layer) {
  auto attn = attention->forward(input_layernorm->forward(h), rope, mask, cache, layer);
  if (parallel_) return mlp->forward(post_attention_layernorm->forward(h)) + attn + h;  // transformers' order
  auto x = attn + h;
  return mlp->forward(post_attention_layernorm->forward(x)) + x;
}

GPTNeoXModel::GPTNeoXModel(const GPTNeoXConfig& c)
    : rope_(c.rope, c.hidden_size / c.num_heads, c.max_position_embeddings, /*partial_ok=*/true) {
  embed_in = register_module("embed_in", std::make_shared<Embedding>(c.vocab_size, c.hidden_size));
  layers = register_module("layers", std::make_shared<ModuleList<GPTNeoXLayer>>());
  for (int64_t i = 0; i < c.num_layers; ++i) layers->push_back(std::make_shared<GPTNeoXLayer>(c));
  final_layer_norm = register_module("final_layer_norm", std::make_shared<LayerNorm>(c.hidden_size, c.layer_norm_eps));
}

at::Tensor GPTNeoXModel::forward(const ModelInputs& in) {
  auto h = in.inputs_embeds.defined() ? in.inputs_embeds : embed_in->forward(in.input_ids);
  const auto step = begin_decoder_step(in, layers->size(), h.device());
  const auto angles = rope_.angles(step.positions, h.scalar_type(), h.device());
  h = run_decoder_blocks(layers->size(), h, in,
                         [this, angles, mask = step.mask](size_t i, const at::Tensor& x, KVCache* c) {
                           return (*layers)[i].forward(x, angles, mask, c, i);
                         });
  return final_layer_norm->forward(h);
}

GPTNeoXForCausalLM::GPTNeoXForCausalLM(const nlohmann::json& j, const std::string& where)
    : GPTNeoXForCausalLM(j, GPTNeoXConfig::from_json(j, where)) {}

GPTNeoXForCausalLM::GPTNeoXForCausalLM(const nlohmann::json& j, GPTNeoXConfig cfg)
    : CausalLMBase(j, cfg.tie_word_embeddings), cfg_(std::move(cfg)) {
  gpt_neox = register_module("gpt_neox", std::make_shared<GPTNeoXModel>(cfg_));
  add_lm_head(cfg_.hidden_size, cfg_.vocab_size);
}

std::shared_ptr<Model> make_gpt_neox_classifier(const nlohmann::json& j, const std::string& where) {
  auto c = GPTNeoXConfig::from_json(j, where);
  return std::make_shared<DecoderForSequenceClassification<GPTNeoXModel>>(j, where, "GPTNeoXForSequenceClassification", "gpt_neox",
                                                                     std::make_shared<GPTNeoXModel>(c), c.hidden_size,
                                                                     c.num_layers);
}

}  // namespace peft
