#include "models/falcon.h"

#include <ATen/ATen.h>

#include <cmath>

#include "models/checkpoint.h"
#include "models/seq_cls_head.h"
#include "models/config_reader.h"
#include "models/model_config.h"

namespace peft {

FalconConfig FalconConfig::from_json(const nlohmann::json& j, const std::string& where) {
  ConfigReader r(j, where);
  FalconConfig c;
  c.vocab_size = r.dim("vocab_size", 65024, ConfigLimits::kVocab);
  c.hidden_size = r.dim("hidden_size", 4544, ConfigLimits::kWidth);
  c.num_layers = r.dim(r.has("n_layer") ? "n_layer" : "num_hidden_layers", 32, ConfigLimits::kLayers);
  c.num_heads = r.dim(r.has("n_head") ? "n_head" : "num_attention_heads", 71, ConfigLimits::kHeads);
  c.num_kv_heads = r.dim(r.has("n_head_kv") ? "n_head_kv" : "num_kv_heads", c.num_heads, ConfigLimits::kHeads);
  c.ffn_hidden_size = r.dim("ffn_hidden_size", 4 * c.hidden_size, ConfigLimits::kWidth);
  c.max_position_embeddings = r.dim("max_position_embeddings", 2048, ConfigLimits::kPositions);
  c.layer_norm_epsilon = r.positive("layer_norm_epsilon", 1e-5);
  c.activation = r.get<std::string>("activation", "gelu");
  check_activation(c.activation);
  c.new_decoder_architecture = r.get<bool>("new_decoder_architecture", false);
  c.multi_query = r.get<bool>("multi_query", true);
  c.parallel_attn = r.get<bool>("parallel_attn", true);
  c.bias = r.get<bool>("bias", false);
  c.tie_word_embeddings = r.get<bool>("tie_word_embeddings", true);
  c.num_ln_in_parallel_attn = r.has("num_ln_in_parallel_attn")
                                  ? r.dim("num_ln_in_parallel_attn", std::nullopt, 2)
                                  : (c.new_decoder_architecture ? 2 : 1);
  if (r.get<bool>("alibi", false)) r.fail("alibi=true (Falcon-RW's ALiBi attention) is not supported");
  if (c.hidden_size % c.num_heads != 0) r.fail("hidden_size is not a multiple of num_attention_heads");
  if (c.new_decoder_architecture && c.num_heads % c.num_kv_heads != 0)
    r.fail("num_attention_heads is not a multiple of num_kv_heads");
  if (c.new_decoder_architecture && !c.parallel_attn)
    r.fail("new_decoder_architecture with parallel_attn=false is not supported (transformers cannot run it either)");
  if (c.parallel_attn && !c.new_decoder_architecture && c.num_ln_in_parallel_attn == 2)
    r.fail("num_ln_in_parallel_attn=2 needs new_decoder_architecture");
  c.rope = read_rope_parameters(r, "rope_theta", 10000.0);
  return c;
}

FalconAttention::FalconAttention(const FalconConfig& c)
    : layout_(c.new_decoder_architecture ? Layout::kGrouped : c.multi_query ? Layout::kMultiQuery : Layout::kPerHead),
      heads_(c.num_heads),
      kv_heads_(c.new_decoder_architecture ? c.num_kv_heads : c.multi_query ? 1 : c.num_heads),
      head_dim_(c.hidden_size / c.num_heads) {
  query_key_value = register_module(
      "query_key_value", std::make_shared<Linear>(c.hidden_size, (heads_ + 2 * kv_heads_) * head_dim_, c.bias));
  dense = register_module("dense", std::make_shared<Linear>(c.hidden_size, c.hidden_size, c.bias));
}

at::Tensor FalconAttention::forward(const at::Tensor& h, const RotaryEmbedding::Angles& rope, const at::Tensor& mask,
                                    KVCache* cache, size_t layer) {
  const int64_t b = h.size(0), s = h.size(1), d = head_dim_;
  auto fused = query_key_value->forward(h);
  at::Tensor q, k, v;  // [b, s, heads or kv_heads, d]
  if (layout_ == Layout::kPerHead) {
    auto x = fused.view({b, s, heads_, 3, d});
    q = x.select(3, 0), k = x.select(3, 1), v = x.select(3, 2);
  } else if (layout_ == Layout::kMultiQuery) {
    auto x = fused.view({b, s, heads_ + 2, d});
    q = x.narrow(2, 0, heads_), k = x.narrow(2, heads_, 1), v = x.narrow(2, heads_ + 1, 1);
  } else {
    // Each key/value group holds its queries, then its key and value. Group g's key serves
    // query heads g * per .. g * per + per - 1, which is attend's grouped-query order.
    const int64_t per = heads_ / kv_heads_;
    auto x = fused.view({b, s, kv_heads_, per + 2, d});
    q = x.narrow(3, 0, per).reshape({b, s, heads_, d});
    k = x.select(3, per), v = x.select(3, per + 1);
  }
  q = q.transpose(1, 2), k = k.transpose(1, 2), v = v.transpose(1, 2);
  RotaryEmbedding::apply(q, k, rope);
  update_cache(cache, layer, k, v);
  return dense->forward(attend(q, k, v, mask, 1.0 / std::sqrt(static_cast<double>(d)), /*is_causal=*/true));
}

FalconMLP::FalconMLP(const FalconConfig& c) : act_(c.activation) {
  dense_h_to_4h = register_module("dense_h_to_4h", std::make_shared<Linear>(c.hidden_size, c.ffn_hidden_size, c.bias));
  dense_4h_to_h = register_module("dense_4h_to_h", std::make_shared<Linear>(c.ffn_hidden_size, c.hidden_size, c.bias));
}

at::Tensor FalconMLP::base_forward(const at::Tensor& x) {
  return dense_4h_to_h->forward(activation(act_, dense_h_to_4h->forward(x)));
}

FalconDecoderLayer::FalconDecoderLayer(const FalconConfig& c) {
  self_attention = register_module("self_attention", std::make_shared<FalconAttention>(c));
  mlp = register_module("mlp", std::make_shared<FalconMLP>(c));
  auto norm = [&] { return std::make_shared<LayerNorm>(c.hidden_size, c.layer_norm_epsilon); };
  if (!c.parallel_attn) {
    post_attention_layernorm = register_module("post_attention_layernorm", norm());
    input_layernorm = register_module("input_layernorm", norm());
  } else if (c.num_ln_in_parallel_attn == 2) {
    ln_attn = register_module("ln_attn", norm());
    ln_mlp = register_module("ln_mlp", norm());
  } else {
    input_layernorm = register_module("input_layernorm", norm());
  }
}

at::Tensor FalconDecoderLayer::forward(const at::Tensor& h, const RotaryEmbedding::Angles& rope, const at::Tensor& mask,
                                       KVCache* cache, size_t layer) {
  if (post_attention_layernorm) {  // sequential
    auto x = self_attention->forward(input_layernorm->forward(h), rope, mask, cache, layer) + h;
    return mlp->forward(post_attention_layernorm->forward(x)) + x;
  }
  const auto attn_in = ln_attn ? ln_attn->forward(h) : input_layernorm->forward(h);
  const auto mlp_in = ln_mlp ? ln_mlp->forward(h) : attn_in;
  auto attn = self_attention->forward(attn_in, rope, mask, cache, layer);
  return (mlp->forward(mlp_in) + attn) + h;  // transformers' order
}

FalconModel::FalconModel(const FalconConfig& c)
    : rope_(c.rope, c.hidden_size / c.num_heads, c.max_position_embeddings) {
  word_embeddings = register_module("word_embeddings", std::make_shared<Embedding>(c.vocab_size, c.hidden_size));
  h = register_module("h", std::make_shared<ModuleList<FalconDecoderLayer>>());
  for (int64_t i = 0; i < c.num_layers; ++i) h->push_back(std::make_shared<FalconDecoderLayer>(c));
  ln_f = register_module("ln_f", std::make_shared<LayerNorm>(c.hidden_size, c.layer_norm_epsilon));
}

at::Tensor FalconModel::forward(const ModelInputs& in) {
  auto x = in.inputs_embeds.defined() ? in.inputs_embeds : word_embeddings->forward(in.input_ids);
  const auto step = begin_decoder_step(in, h->size(), x.device());
  const auto angles = rope_.angles(step.positions, x.scalar_type(), x.device());
  x = run_decoder_blocks(h->size(), x, in,
                         [this, angles, mask = step.mask](size_t i, const at::Tensor& t, KVCache* c) {
                           return (*h)[i].forward(t, angles, mask, c, i);
                         });
  return ln_f->forward(x);
}

FalconForCausalLM::FalconForCausalLM(const nlohmann::json& j, const std::string& where)
    : FalconForCausalLM(j, FalconConfig::from_json(j, where)) {}

FalconForCausalLM::FalconForCausalLM(const nlohmann::json& j, FalconConfig cfg)
    : CausalLMBase(j, cfg.tie_word_embeddings), cfg_(std::move(cfg)) {
  transformer = register_module("transformer", std::make_shared<FalconModel>(cfg_));
  add_lm_head(cfg_.hidden_size, cfg_.vocab_size);
}

std::shared_ptr<Model> make_falcon_classifier(const nlohmann::json& j, const std::string& where) {
  auto c = FalconConfig::from_json(j, where);
  return std::make_shared<DecoderForSequenceClassification<FalconModel>>(j, where, "FalconForSequenceClassification", "transformer",
                                                                     std::make_shared<FalconModel>(c), c.hidden_size,
                                                                     c.num_layers);
}

}  // namespace peft
