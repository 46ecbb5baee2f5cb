#include "models/bloom.h"

#include <ATen/ATen.h>

#include <cmath>
#include <limits>

#include "models/attention.h"
#include "models/checkpoint.h"
#include "models/seq_cls_head.h"
#include "models/config_reader.h"

namespace peft {

namespace {

// transformers' _get_alibi_slopes: a geometric sequence per power of two of heads, the
// remaining heads interleaved from the next power's sequence.
at::Tensor alibi_slopes(int64_t heads) {
  const int64_t p = int64_t{1} << static_cast<int64_t>(std::floor(std::log2(static_cast<double>(heads))));
  auto base_of = [](int64_t n) { return std::pow(2.0, -std::pow(2.0, -(std::log2(static_cast<double>(n)) - 3.0))); };
  auto f32 = at::TensorOptions(at::kFloat);
  auto slopes = at::pow(at::full({}, base_of(p), f32), at::arange(1, 1 + p, at::kInt));
  if (p != heads) {
    const int64_t rest = std::min(p, heads - p);
    auto extra = at::pow(at::full({}, base_of(2 * p), f32), at::arange(1, 1 + 2 * rest, 2, at::kInt));
    slopes = at::cat({slopes, extra});
  }
  return slopes;
}

// Megatron's tanh GELU with BLOOM's constants (bloom_gelu_forward).
at::Tensor bloom_gelu(const at::Tensor& x) { return x * 0.5 * (1.0 + at::tanh(0.79788456 * x * (1 + 0.044715 * x * x))); }

}  // namespace

BloomConfig BloomConfig::from_json(const nlohmann::json& j, const std::string& where) {
  ConfigReader r(j, where);
  BloomConfig c;
  c.vocab_size = r.dim("vocab_size", 250880, ConfigLimits::kVocab);
  // BloomConfig's n_embed, n_layer, n_head are also read as hidden_size,
  // num_hidden_layers, num_attention_heads (attribute_map); files use either.
  c.hidden_size = r.dim(r.has("n_embed") ? "n_embed" : "hidden_size", 64, ConfigLimits::kWidth);
  c.num_layers = r.dim(r.has("n_layer") ? "n_layer" : "num_hidden_layers", 2, ConfigLimits::kLayers);
  c.num_heads = r.dim(r.has("n_head") ? "n_head" : "num_attention_heads", 8, ConfigLimits::kHeads);
  c.layer_norm_epsilon = r.positive("layer_norm_epsilon", 1e-5);
  c.residual_post_layernorm = r.get<bool>("apply_residual_connection_post_layernorm", false);
  c.tie_word_embeddings = r.get<bool>("tie_word_embeddings", true);
  if (c.hidden_size % c.num_heads != 0) r.fail("hidden_size is not a multiple of n_head");
  return c;
}

BloomAttention::BloomAttention(const BloomConfig& c) : heads_(c.num_heads), head_dim_(c.hidden_size / c.num_heads) {
  query_key_value =
      register_module("query_key_value", std::make_shared<Linear>(c.hidden_size, 3 * c.hidden_size, true));
  dense = register_module("dense", std::make_shared<Linear>(c.hidden_size, c.hidden_size, true));
}

// transformers' BloomAttention, op for op: scores = alibi + (q k^T) / sqrt(d) in one
// baddbmm, masked, softmax in float32.
at::Tensor BloomAttention::forward(const at::Tensor& h, const at::Tensor& alibi, const at::Tensor& mask,
                                   KVCache* cache, size_t layer) {
  const int64_t b = h.size(0), s = h.size(1);
  auto fused = query_key_value->forward(h).view({b, s, heads_, 3, head_dim_});
  auto q = fused.select(3, 0).transpose(1, 2);
  auto k = fused.select(3, 1).transpose(1, 2);
  auto v = fused.select(3, 2).transpose(1, 2);
  update_cache(cache, layer, k, v);
  const int64_t kv = k.size(2);
  auto scores = at::baddbmm(alibi.reshape({b * heads_, 1, kv}), q.reshape({b * heads_, s, head_dim_}),
                            k.reshape({b * heads_, kv, head_dim_}).transpose(-1, -2), /*beta=*/1.0,
                            /*alpha=*/1.0 / std::sqrt(static_cast<double>(head_dim_)));
  auto weights = scores.view({b, heads_, s, kv}).masked_fill(mask.logical_not(), -std::numeric_limits<float>::infinity());
  auto probs = at::softmax(weights, -1, at::kFloat).to(q.scalar_type());
  auto context = at::bmm(probs.view({b * heads_, s, kv}), v.reshape({b * heads_, kv, head_dim_}));
  return dense->forward(context.view({b, heads_, s, head_dim_}).permute({0, 2, 1, 3}).reshape({b, s, heads_ * head_dim_}));
}

BloomMLP::BloomMLP(const BloomConfig& c) {
  dense_h_to_4h = register_module("dense_h_to_4h", std::make_shared<Linear>(c.hidden_size, 4 * c.hidden_size, true));
  dense_4h_to_h = register_module("dense_4h_to_h", std::make_shared<Linear>(4 * c.hidden_size, c.hidden_size, true));
}

at::Tensor BloomMLP::base_forward(const at::Tensor& x) { return dense_4h_to_h->forward(bloom_gelu(dense_h_to_4h->forward(x))); }

BloomBlock::BloomBlock(const BloomConfig& c) : residual_post_ln_(c.residual_post_layernorm) {
  input_layernorm = register_module("input_layernorm", std::make_shared<LayerNorm>(c.hidden_size, c.layer_norm_epsilon));
  self_attention = register_module("self_attention", std::make_shared<BloomAttention>(c));
  post_attention_layernorm =
      register_module("post_attention_layernorm", std::make_shared<LayerNorm>(c.hidden_size, c.layer_norm_epsilon));
  mlp = register_module("mlp", std::make_shared<BloomMLP>(c));
}

at::Tensor BloomBlock::forward(const at::Tensor& h, const at::Tensor& alibi, const at::Tensor& mask, KVCache* cache,
                               size_t layer) {
  auto ln = input_layernorm->forward(h);
  auto x = self_attention->forward(ln, alibi, mask, cache, layer) + (residual_post_ln_ ? ln : h);
  auto ln2 = post_attention_layernorm->forward(x);
  return mlp->forward(ln2) + (residual_post_ln_ ? ln2 : x);
}

BloomModel::BloomModel(const BloomConfig& c) : slopes_(alibi_slopes(c.num_heads)) {
  word_embeddings = register_module("word_embeddings", std::make_shared<Embedding>(c.vocab_size, c.hidden_size));
  word_embeddings_layernorm =
      register_module("word_embeddings_layernorm", std::make_shared<LayerNorm>(c.hidden_size, c.layer_norm_epsilon));
  h = register_module("h", std::make_shared<ModuleList<BloomBlock>>());
  for (int64_t i = 0; i < c.num_layers; ++i) h->push_back(std::make_shared<BloomBlock>(c));
  ln_f = register_module("ln_f", std::make_shared<LayerNorm>(c.hidden_size, c.layer_norm_epsilon));
}

at::Tensor BloomModel::forward(const ModelInputs& in) {
  auto x = word_embeddings_layernorm->forward(in.inputs_embeds.defined() ? in.inputs_embeds
                                                                          : word_embeddings->forward(in.input_ids));
  const auto step = begin_decoder_step(in, h->size(), x.device());
  const int64_t b = x.size(0), s = x.size(1), kv = step.past + s;
  const auto mask = step.mask.defined() ? step.mask : make_attention_mask({}, b, s, kv, /*causal=*/true, x.device());
  // Key positions for ALiBi: counted over the mask (0 on padding), else 0..kv-1. Packed
  // rows need nothing more: each sequence sees only its own keys, and softmax ignores the
  // constant shift of a sequence's start.
  at::Tensor key_pos;
  if (in.attention_mask.defined()) {
    const auto m = in.attention_mask.to(x.device()).to(at::kLong);
    key_pos = (m.cumsum(-1) - 1) * m;
  } else {
    key_pos = at::arange(kv, at::TensorOptions(at::kLong).device(x.device())).unsqueeze(0).expand({b, kv});
  }
  const auto alibi = (slopes_.to(x.device()).view({1, -1, 1}) * key_pos.unsqueeze(1)).to(x.scalar_type()).unsqueeze(2);
  x = run_decoder_blocks(h->size(), x, in, [this, alibi, mask](size_t i, const at::Tensor& t, KVCache* c) {
    return (*h)[i].forward(t, alibi, mask, c, i);
  });
  return ln_f->forward(x);
}

BloomForCausalLM::BloomForCausalLM(const nlohmann::json& j, const std::string& where)
    : BloomForCausalLM(j, BloomConfig::from_json(j, where)) {}

BloomForCausalLM::BloomForCausalLM(const nlohmann::json& j, BloomConfig cfg)
    : CausalLMBase(j, cfg.tie_word_embeddings), cfg_(std::move(cfg)) {
  transformer = register_module("transformer", std::make_shared<BloomModel>(cfg_));
  add_lm_head(cfg_.hidden_size, cfg_.vocab_size);
}

std::shared_ptr<Model> make_bloom_classifier(const nlohmann::json& j, const std::string& where) {
  auto c = BloomConfig::from_json(j, where);
  return std::make_shared<DecoderForSequenceClassification<BloomModel>>(j, where, "BloomForSequenceClassification", "transformer",
                                                                     std::make_shared<BloomModel>(c), c.hidden_size,
                                                                     c.num_layers);
}

}  // namespace peft
