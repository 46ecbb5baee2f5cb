#include "models/t5.h"

#include <ATen/ATen.h>

#include <cmath>

#include "models/attention.h"
#include "models/checkpoint.h"
#include "models/seq2seq_attention.h"

namespace peft {

namespace {

// transformers' T5Attention._relative_position_bucket, op for op (the float32 logarithm
// decides which bucket a distance falls into).
at::Tensor relative_position_bucket(at::Tensor rel, bool bidirectional, int64_t num_buckets, int64_t max_distance) {
  at::Tensor buckets = at::zeros_like(rel);
  if (bidirectional) {
    num_buckets /= 2;
    buckets = buckets + (rel > 0).to(at::kLong) * num_buckets;
    rel = rel.abs();
  } else {
    rel = -at::minimum(rel, at::zeros_like(rel));
  }
  const int64_t max_exact = num_buckets / 2;
  const auto is_small = rel < max_exact;
  auto large = max_exact + (at::log(rel.to(at::kFloat) / max_exact) /
                            std::log(static_cast<double>(max_distance) / static_cast<double>(max_exact)) *
                            (num_buckets - max_exact))
                               .to(at::kLong);
  large = at::minimum(large, at::full_like(large, num_buckets - 1));
  return buckets + at::where(is_small, rel, large);
}

// Padding [b, k] (1 = real) as an additive mask [b, 1, 1, k]; undefined stays undefined.
at::Tensor padding_bias(const at::Tensor& mask, at::ScalarType dtype) {
  if (!mask.defined()) return {};
  return ((mask == 0).to(dtype) * dtype_lowest(dtype)).view({mask.size(0), 1, 1, mask.size(1)});
}

}  // namespace

T5Attention::T5Attention(const T5Config& c, bool has_bias, bool is_decoder)
    : heads_(c.num_heads),
      d_kv_(c.d_kv),
      num_buckets_(c.relative_attention_num_buckets),
      max_distance_(c.relative_attention_max_distance),
      bidirectional_(!is_decoder) {
  const int64_t inner = heads_ * d_kv_;
  q = register_module("q", std::make_shared<Linear>(c.d_model, inner, false));
  k = register_module("k", std::make_shared<Linear>(c.d_model, inner, false));
  v = register_module("v", std::make_shared<Linear>(c.d_model, inner, false));
  o = register_module("o", std::make_shared<Linear>(inner, c.d_model, false));
  if (has_bias)
    relative_attention_bias =
        register_module("relative_attention_bias", std::make_shared<Embedding>(num_buckets_, heads_));
}

at::Tensor T5Attention::compute_bias(int64_t q_len, int64_t k_len, int64_t past, at::Device device) const {
  const auto opts = at::TensorOptions().dtype(at::kLong).device(device);
  const auto context = at::arange(q_len, opts).unsqueeze(1) + past;
  const auto memory = at::arange(k_len, opts).unsqueeze(0);
  const auto bucket = relative_position_bucket(memory - context, bidirectional_, num_buckets_, max_distance_);
  return relative_attention_bias->forward(bucket).permute({2, 0, 1}).unsqueeze(0);
}

at::Tensor T5Attention::forward(const at::Tensor& h, const at::Tensor& kv_states, const at::Tensor& bias,
                                KVCache* cache, at::Tensor* cross_k, at::Tensor* cross_v, size_t layer) {
  const auto qh = split_heads(q->forward(h), heads_, d_kv_);
  at::Tensor kh, vh;
  if (!kv_states.defined()) {
    kh = split_heads(k->forward(h), heads_, d_kv_);
    vh = split_heads(v->forward(h), heads_, d_kv_);
    update_cache(cache, layer, kh, vh);
  } else if (cross_k && cross_k->defined()) {
    kh = *cross_k;
    vh = *cross_v;
  } else {
    kh = split_heads(k->forward(kv_states), heads_, d_kv_);
    vh = split_heads(v->forward(kv_states), heads_, d_kv_);
    if (cross_k) {
      *cross_k = kh;
      *cross_v = vh;
    }
  }
  // No 1/sqrt(d) scaling: T5 folds it into its initialization.
  auto scores = at::matmul(qh, kh.transpose(2, 3));
  if (bias.defined()) scores = scores + bias;
  const auto weights = at::softmax(scores.to(at::kFloat), -1).to(scores.scalar_type());
  const auto out = at::matmul(weights, vh).transpose(1, 2).contiguous();
  return o->forward(out.view({out.size(0), out.size(1), heads_ * d_kv_}));
}

T5LayerSelfAttention::T5LayerSelfAttention(const T5Config& c, bool has_bias, bool is_decoder) {
  SelfAttention = register_module("SelfAttention", std::make_shared<T5Attention>(c, has_bias, is_decoder));
  layer_norm = register_module("layer_norm", std::make_shared<RMSNorm>(c.d_model, c.layer_norm_epsilon, "T5LayerNorm"));
}

T5LayerCrossAttention::T5LayerCrossAttention(const T5Config& c) {
  EncDecAttention = register_module("EncDecAttention", std::make_shared<T5Attention>(c, false, true));
  layer_norm = register_module("layer_norm", std::make_shared<RMSNorm>(c.d_model, c.layer_norm_epsilon, "T5LayerNorm"));
}

T5DenseActDense::T5DenseActDense(const T5Config& c) : gated_(c.is_gated_act), act_(c.dense_act_fn) {
  if (gated_) {
    wi_0 = register_module("wi_0", std::make_shared<Linear>(c.d_model, c.d_ff, false));
    wi_1 = register_module("wi_1", std::make_shared<Linear>(c.d_model, c.d_ff, false));
  } else {
    wi = register_module("wi", std::make_shared<Linear>(c.d_model, c.d_ff, false));
  }
  wo = register_module("wo", std::make_shared<Linear>(c.d_ff, c.d_model, false));
}

at::Tensor T5DenseActDense::forward(const at::Tensor& x) {
  if (gated_) return wo->forward(activation(act_, wi_0->forward(x)) * wi_1->forward(x));
  return wo->forward(activation(act_, wi->forward(x)));
}

T5LayerFF::T5LayerFF(const T5Config& c) {
  DenseReluDense = register_module("DenseReluDense", std::make_shared<T5DenseActDense>(c));
  layer_norm = register_module("layer_norm", std::make_shared<RMSNorm>(c.d_model, c.layer_norm_epsilon, "T5LayerNorm"));
}

T5Block::T5Block(const T5Config& c, bool has_bias, bool is_decoder) {
  layer = register_module("layer", std::make_shared<ModuleList<Module>>());
  self_attention = std::make_shared<T5LayerSelfAttention>(c, has_bias, is_decoder);
  layer->push_back(self_attention);
  if (is_decoder) {
    cross_attention = std::make_shared<T5LayerCrossAttention>(c);
    layer->push_back(cross_attention);
  }
  ff = std::make_shared<T5LayerFF>(c);
  layer->push_back(ff);
}

at::Tensor T5Block::forward(const at::Tensor& h, const at::Tensor& self_bias, const at::Tensor& encoder_states,
                            const at::Tensor& cross_bias, Seq2SeqCache* cache, size_t index) {
  auto& self = *self_attention;
  auto x = h + self.SelfAttention->forward(self.layer_norm->forward(h), {}, self_bias,
                                           cache ? &cache->self_attn : nullptr, nullptr, nullptr, index);
  if (cross_attention && encoder_states.defined()) {
    auto& cross = *cross_attention;
    x = x + cross.EncDecAttention->forward(cross.layer_norm->forward(x), encoder_states, cross_bias, nullptr,
                                           cache ? &cache->cross_keys[index] : nullptr,
                                           cache ? &cache->cross_values[index] : nullptr, index);
  }
  return ff->forward(x);
}

T5Stack::T5Stack(const T5Config& c, bool is_decoder) {
  embed_tokens = register_module("embed_tokens", std::make_shared<Embedding>(c.vocab_size, c.d_model));
  block = register_module("block", std::make_shared<ModuleList<T5Block>>());
  const int64_t n = is_decoder ? c.num_decoder_layers : c.num_layers;
  for (int64_t i = 0; i < n; ++i) block->push_back(std::make_shared<T5Block>(c, i == 0, is_decoder));
  final_layer_norm =
      register_module("final_layer_norm", std::make_shared<RMSNorm>(c.d_model, c.layer_norm_epsilon, "T5LayerNorm"));
}

at::Tensor T5Stack::encode(const at::Tensor& embeds, const at::Tensor& mask, bool checkpoint) {
  auto h = embeds;
  const int64_t s = h.size(1);
  // Block 0's bias serves every block, as transformers passes it on.
  auto bias = (*block)[0].self_attention->SelfAttention->compute_bias(s, s, 0, h.device()).to(h.scalar_type());
  if (mask.defined()) bias = bias + padding_bias(mask.to(h.device()), h.scalar_type());
  h = run_layers(block->size(), checkpoint, h, {bias}, [this](size_t i, const std::vector<at::Tensor>& v) {
    return (*block)[i].forward(v[0], v[1], {}, {}, nullptr, i);
  });
  return final_layer_norm->forward(h);
}

at::Tensor T5Stack::decode(const Seq2SeqInputs& in, const at::Tensor& encoder_states) {
  auto h = embed_tokens->forward(in.decoder_input_ids);
  const auto dtype = h.scalar_type();
  const at::Device device = h.device();
  Seq2SeqCache* cache = in.cache;
  size_seq2seq_cache(cache, block->size());
  const int64_t t = h.size(1), past = cache ? cache->length() : 0, keys = past + t;
  auto self_bias = (*block)[0].self_attention->SelfAttention->compute_bias(t, keys, past, device).to(dtype);
  // Causal: the query at position past + i sees keys 0 .. past + i.
  const auto opts = at::TensorOptions().dtype(at::kLong).device(device);
  auto hidden = (at::arange(keys, opts).unsqueeze(0) > (at::arange(t, opts).unsqueeze(1) + past)).view({1, 1, t, keys});
  if (in.decoder_attention_mask.defined())
    hidden = hidden | (in.decoder_attention_mask.to(device) == 0).view({h.size(0), 1, 1, keys});
  self_bias = self_bias + hidden.to(dtype) * dtype_lowest(dtype);
  const auto cross_bias = padding_bias(in.attention_mask.defined() ? in.attention_mask.to(device) : at::Tensor(), dtype);
  h = run_layers(block->size(), in.checkpoint_layers && !cache, h, {self_bias, encoder_states, cross_bias},
                 [this, cache](size_t i, const std::vector<at::Tensor>& v) {
                   return (*block)[i].forward(v[0], v[1], v[2], v[3], cache, i);
                 });
  return final_layer_norm->forward(h);
}

T5ForConditionalGeneration::T5ForConditionalGeneration(const nlohmann::json& j, const std::string& where,
                                                       std::string arch)
    : Model(j), cfg_(T5Config::from_json(j, where)), arch_(std::move(arch)) {
  // transformers' MT5 never rescales the decoder output (its config forces
  // tie_word_embeddings true, and its forward has no scale_decoder_outputs).
  if (arch_ == "MT5") cfg_.scale_decoder_outputs = false;
  shared = register_module("shared", std::make_shared<Embedding>(cfg_.vocab_size, cfg_.d_model));
  encoder = register_module("encoder", std::make_shared<T5Stack>(cfg_, false));
  decoder = register_module("decoder", std::make_shared<T5Stack>(cfg_, true));
  lm_head = register_module("lm_head", std::make_shared<Linear>(cfg_.d_model, cfg_.vocab_size, false));
}

void T5ForConditionalGeneration::tie_weights() {
  encoder->embed_tokens->weight = shared->weight;
  decoder->embed_tokens->weight = shared->weight;
  // transformers 5 ties lm_head to shared unless a checkpoint holds both with different
  // values (T5 v1.1 / Flan-T5); then they stay apart and both count as parameters.
  if (!lm_head->weight.defined() || at::equal(lm_head->weight, shared->weight)) lm_head->weight = shared->weight;
}

Seq2SeqOutputs T5ForConditionalGeneration::run_seq2seq(const Seq2SeqInputs& in) {
  if (!in.decoder_input_ids.defined()) throw std::invalid_argument(type_name() + ": decoder_input_ids are required");
  for (const auto* ids : {&in.input_ids, &in.decoder_input_ids}) {
    ModelInputs check;
    check.input_ids = *ids;
    if (ids->defined()) check_inputs(check);
  }
  Seq2SeqOutputs out;
  at::Tensor enc = in.encoder_hidden_states;
  if (!enc.defined()) {
    if (!in.input_ids.defined() && !in.inputs_embeds.defined())
      throw std::invalid_argument(type_name() + ": input_ids or inputs_embeds are required");
    enc = encoder->encode(in.inputs_embeds.defined() ? in.inputs_embeds : encoder->embed_tokens->forward(in.input_ids),
                          in.attention_mask, in.checkpoint_layers);
  }
  out.encoder_last_hidden_state = enc;
  auto h = decoder->decode(in, enc);
  if (cfg_.scale_decoder_outputs) h = h * std::pow(static_cast<double>(cfg_.d_model), -0.5);
  out.logits = lm_head->forward(h);
  return out;
}

ModelOutputs T5ForConditionalGeneration::run(const ModelInputs&) {
  refuse_one_sequence(type_name(), "encoder and decoder inputs");
}

}  // namespace peft
