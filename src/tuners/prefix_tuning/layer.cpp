#include "tuners/prefix_tuning/layer.h"

#include <ATen/ATen.h>

namespace peft {

PrefixEncoder::PrefixEncoder(int64_t n_, int64_t layers_, int64_t heads_, int64_t head_dim_, bool proj,
                             int64_t token_dim, int64_t hidden)
    : n(n_), layers(layers_), heads(heads_), head_dim(head_dim_), projection(proj) {
  const int64_t out = layers * 2 * heads * head_dim;
  if (!projection) {
    embedding = at::zeros({n, out}, at::kFloat);
    register_parameter("prompt_embeddings", &embedding, {n, out});
    return;
  }
  embedding = at::zeros({n, token_dim}, at::kFloat);
  register_parameter("embedding.weight", &embedding, {n, token_dim});
  transform = {at::zeros({hidden, token_dim}, at::kFloat), at::zeros({hidden}, at::kFloat),
               at::zeros({out, hidden}, at::kFloat), at::zeros({out}, at::kFloat)};
  register_parameter("transform.0.weight", &transform[0], {hidden, token_dim});
  register_parameter("transform.0.bias", &transform[1], {hidden});
  register_parameter("transform.2.weight", &transform[2], {out, hidden});
  register_parameter("transform.2.bias", &transform[3], {out});
}

at::Tensor PrefixEncoder::past() {
  if (!projection) return embedding;
  return at::linear(at::tanh(at::linear(embedding, transform[0], transform[1])), transform[2], transform[3]);
}

std::vector<std::pair<std::string, at::Tensor>> PrefixEncoder::saved_tensors() {
  return {{"prompt_embeddings", past().detach()}};
}

at::Tensor PrefixEncoder::row_prefix() {
  if (submodules != 1) return {};
  return past().view({n, layers, 2, heads, head_dim}).permute({1, 2, 3, 0, 4});
}

int64_t PrefixEncoder::prepare(Model& model, ModelInputs& in) {
  if (model.num_cache_layers() != layers)
    throw std::invalid_argument("prefix tuning: the adapter has " + std::to_string(layers) + " layers, " +
                                model.type_name() + " has " + std::to_string(model.num_cache_layers()) +
                                " decoder layers with a KV cache");
  const int64_t b = in.batch_size();
  if (!in.cache) {
    scratch_ = KVCache{};
    in.cache = &scratch_;
  }
  if (in.cache->length() == 0) {
    const auto dtype = model.dtype();
    // HF's layout: [n, layers * 2, heads, head_dim] -> [layers * 2, batch, heads, n, head_dim].
    auto kv = past().to(dtype).view({1, n, layers * 2, heads, head_dim}).expand({b, n, layers * 2, heads, head_dim});
    kv = kv.permute({2, 0, 3, 1, 4});
    in.cache->keys.resize(layers);
    in.cache->values.resize(layers);
    for (int64_t l = 0; l < layers; ++l) {
      in.cache->keys[l] = kv[2 * l];
      in.cache->values[l] = kv[2 * l + 1];
    }
  }
  if (in.attention_mask.defined()) in.attention_mask = prepend_ones(in.attention_mask, n);
  if (in.position_ids.defined()) in.position_ids = in.position_ids + n;
  return 0;
}

// HF PEFT 0.21's get_prompt for num_transformer_submodules 2: the [n, 2 * layers] key and
// value rows are concatenated with themselves along that axis and cut into 4-row groups,
// one per layer: (self key, self value, cross key, cross value), so layer l reads rows
// 4l, 4l+1 modulo 2 * layers (not its own 2l, 2l+1). The EncoderDecoderCache it builds then
// gets an empty cross-attention cache (the encoder output is not prefixed), so only the
// self-attention rows take effect. The decoder's attention mask gets n ones in front.
void PrefixEncoder::prepare_seq2seq(Model& model, Seq2SeqInputs& in) {
  if (model.num_cache_layers() != layers)
    throw std::invalid_argument("prefix tuning: the adapter has " + std::to_string(layers) + " layers, " +
                                model.type_name() + " has " + std::to_string(model.num_cache_layers()) +
                                " decoder layers");
  if (!in.cache) {
    seq2seq_scratch_ = Seq2SeqCache{};
    in.cache = &seq2seq_scratch_;
  }
  if (in.cache->length() == 0) {
    const int64_t b = in.decoder_input_ids.size(0), rows = 2 * layers, group = 2 * submodules;
    auto kv = past().to(model.dtype()).view({1, n, rows, heads, head_dim}).expand({b, n, rows, heads, head_dim});
    kv = kv.permute({2, 0, 3, 1, 4});  // [2 * layers, b, heads, n, head_dim]
    auto& self = in.cache->self_attn;
    self.keys.resize(layers);
    self.values.resize(layers);
    for (int64_t l = 0; l < layers; ++l) {
      self.keys[l] = kv[(group * l) % rows];
      self.values[l] = kv[(group * l + 1) % rows];
    }
  }
  if (in.decoder_attention_mask.defined()) in.decoder_attention_mask = prepend_ones(in.decoder_attention_mask, n);
}

}  // namespace peft
