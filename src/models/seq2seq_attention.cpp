#include "models/seq2seq_attention.h"

#include <ATen/ATen.h>

#include <cmath>
#include <stdexcept>
#include <string>

#include "models/attention.h"

namespace peft {

Seq2SeqAttention::Seq2SeqAttention(int64_t d_model, int64_t heads, Options options)
    : heads_(heads), head_dim_(d_model / heads), options_(std::move(options)) {
  k_proj = register_module("k_proj", std::make_shared<Linear>(d_model, d_model, options_.k_bias));
  v_proj = register_module("v_proj", std::make_shared<Linear>(d_model, d_model, true));
  q_proj = register_module("q_proj", std::make_shared<Linear>(d_model, d_model, true));
  out_proj = register_module("out_proj", std::make_shared<Linear>(d_model, d_model, true));
}

at::Tensor Seq2SeqAttention::forward(const at::Tensor& h, const at::Tensor& kv_states, const at::Tensor& mask,
                                     bool causal, KVCache* cache, at::Tensor* cross_k, at::Tensor* cross_v,
                                     size_t layer) {
  const double scale = std::pow(static_cast<double>(head_dim_), -0.5);
  // Each family's order, as transformers': Whisper scales the query and runs the product
  // unscaled, BART scales the scores.
  auto q = q_proj->forward(h);
  if (options_.scale_query) q = q * scale;
  q = split_heads(q, heads_, head_dim_);
  at::Tensor k, v;
  if (!kv_states.defined()) {
    k = split_heads(k_proj->forward(h), heads_, head_dim_);
    v = split_heads(v_proj->forward(h), heads_, head_dim_);
    update_cache(cache, layer, k, v);
  } else if (cross_k && cross_k->defined()) {
    k = *cross_k;
    v = *cross_v;
  } else {
    k = split_heads(k_proj->forward(kv_states), heads_, head_dim_);
    v = split_heads(v_proj->forward(kv_states), heads_, head_dim_);
    if (cross_k) {
      *cross_k = k;
      *cross_v = v;
    }
  }
  return out_proj->forward(
      attend(q.contiguous(), k.contiguous(), v.contiguous(), mask, options_.scale_query ? 1.0 : scale, causal));
}

void size_seq2seq_cache(Seq2SeqCache* cache, size_t layers) {
  if (!cache) return;
  for (auto* v : {&cache->self_attn.keys, &cache->self_attn.values, &cache->cross_keys, &cache->cross_values})
    if (v->size() < layers) v->resize(layers);
}

void check_decoder_positions(const at::Tensor& p, int64_t b, int64_t t, int64_t limit, const std::string& who) {
  if (p.dim() != 2 || p.size(0) != b || p.size(1) != t || p.scalar_type() != at::kLong)
    throw std::invalid_argument(who + ": decoder_position_ids must be int64 [" + std::to_string(b) + ", " +
                                std::to_string(t) + "], as decoder_input_ids");
  if (p.numel() > 0 && ((p < 0) | (p >= limit)).any().item<bool>())  // one device sync a step
    throw std::invalid_argument(who + ": decoder_position_ids must be in [0, " + std::to_string(limit) +
                                ") (its positions)");
}

}  // namespace peft
