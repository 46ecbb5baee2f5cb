#include "models/attention.h"

#include <ATen/ATen.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>
#include <limits>
#include <stdexcept>

#include "models/decode_attention.h"
#include "models/fused_ops.h"

namespace peft {

at::Tensor make_attention_mask(const at::Tensor& padding, int64_t batch, int64_t q_len, int64_t kv_len,
                               bool causal, at::Device device) {
  auto opts = at::TensorOptions().device(device);
  at::Tensor mask;
  if (causal) {
    // Query i (at absolute position kv_len - q_len + i) sees keys 0..that position.
    auto qpos = at::arange(kv_len - q_len, kv_len, opts.dtype(at::kLong)).unsqueeze(1);
    auto kpos = at::arange(kv_len, opts.dtype(at::kLong)).unsqueeze(0);
    mask = (kpos <= qpos).view({1, 1, q_len, kv_len}).expand({batch, 1, q_len, kv_len});
  } else {
    mask = at::ones({batch, 1, q_len, kv_len}, opts.dtype(at::kBool));
  }
  if (padding.defined()) {
    if (padding.dim() != 2 || padding.size(0) != batch || padding.size(1) != kv_len)
      throw std::invalid_argument("attention_mask has shape " + c10::str(padding.sizes()) + ", expected [" +
                                  std::to_string(batch) + ", " + std::to_string(kv_len) + "]");
    mask = mask & padding.to(device).to(at::kBool).view({batch, 1, 1, kv_len});
  }
  auto empty_rows = mask.logical_not().all(-1, /*keepdim=*/true);
  return mask | empty_rows;
}

at::Tensor ExtensibleAttention::extended(const at::Tensor& out, const at::Tensor& hidden, const at::Tensor& q) const {
  if (!extension) return out;
  const at::Tensor extra = extension->extra_output(hidden, q);
  return extra.defined() ? out + extra : out;
}

at::Tensor split_heads(const at::Tensor& x, int64_t heads, int64_t head_dim) {
  return x.view({x.size(0), x.size(1), heads, head_dim}).transpose(1, 2);
}

at::Tensor decoder_mask(const at::Tensor& padding, int64_t batch, int64_t q_len, int64_t past, at::Device device) {
  // One new position sees every key, as do the first positions causally: without padding
  // no mask is needed, and SDPA then reads grouped key/value heads without repeating them.
  if ((past == 0 || q_len == 1) && (!padding.defined() || padding.all().item<bool>())) return {};
  return make_attention_mask(padding, batch, q_len, past + q_len, /*causal=*/true, device);
}

at::Tensor packed_sequence_ids(const at::Tensor& position_ids) {
  auto first = position_ids.narrow(-1, 0, 1) - 1;
  auto starts = at::diff(position_ids, 1, -1, first).ne(1);
  auto ids = starts.cumsum(-1);
  if (ids.select(-1, ids.size(-1) - 1).eq(0).all().item<bool>()) return {};
  return ids;
}

at::Tensor packed_causal_mask(const at::Tensor& sequence_ids) {
  const int64_t b = sequence_ids.size(0), s = sequence_ids.size(1);
  auto pos = at::arange(s, sequence_ids.options());
  auto causal = (pos.unsqueeze(0) <= pos.unsqueeze(1)).view({1, 1, s, s});
  auto same = sequence_ids.view({b, 1, s, 1}).eq(sequence_ids.view({b, 1, 1, s}));
  return causal & same;
}

DecoderStep begin_decoder_step(const ModelInputs& in, size_t num_layers, at::Device device) {
  const int64_t b = in.batch_size(), s = in.seq_len();
  KVCache* cache = in.cache;
  if (cache && cache->keys.size() != num_layers) {
    cache->keys.resize(num_layers);
    cache->values.resize(num_layers);
  }
  DecoderStep step;
  step.past = cache ? cache->length() : 0;
  step.positions = in.position_ids.defined()
                       ? in.position_ids
                       : at::arange(step.past, step.past + s, at::TensorOptions(at::kLong).device(device)).unsqueeze(0).expand({b, s});
  step.mask = decoder_mask(in.attention_mask, b, s, step.past, device);
  // As transformers: position ids that restart mark packed sequences, which then attend
  // only within themselves (only without a padding mask and a cache).
  if (in.position_ids.defined() && !in.attention_mask.defined() && !cache && s > 1) {
    auto ids = packed_sequence_ids(step.positions.to(device).expand({b, s}));
    if (ids.defined()) step.mask = packed_causal_mask(ids);
  }
  return step;
}

void update_cache(KVCache* cache, size_t layer, at::Tensor& k, at::Tensor& v) {
  if (!cache) return;
  if (cache->keys[layer].defined()) {
    k = at::cat({cache->keys[layer], k}, 2);
    v = at::cat({cache->values[layer], v}, 2);
  }
  cache->keys[layer] = k;
  cache->values[layer] = v;
}

at::Tensor attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                  double scale, bool is_causal) {
  // A decode step (one query; with no mask it sees every key, see below).
  if (decode_attention_applies(q, k, v, mask)) return decode_attention(q, k, v, mask, scale);
  const int64_t groups = q.size(1) / k.size(1);
  // As transformers: without a mask SDPA reads each key/value head for its group of query
  // heads itself (no repeated copies, forward or backward); with one, the heads are
  // repeated first, which every SDPA kernel accepts.
  const bool native_gqa = groups > 1 && !mask.defined() && k.size(-1) <= 256;
  auto kk = groups > 1 && !native_gqa ? k.repeat_interleave(groups, 1) : k;
  auto vv = groups > 1 && !native_gqa ? v.repeat_interleave(groups, 1) : v;
  auto m = mask.defined() ? std::optional<at::Tensor>(mask) : std::nullopt;
  // Causal only where queries and keys are the same positions: a decode step's one query
  // (past > 0) sees all keys, where ATen's is_causal would align it with the first.
  const bool causal = is_causal && !mask.defined() && q.size(2) == k.size(2);
  auto out = at::scaled_dot_product_attention(q, kk, vv, m, 0.0, causal, scale, native_gqa);
  return out.transpose(1, 2).reshape({q.size(0), q.size(2), q.size(1) * q.size(3)});
}

at::Tensor attend_eager(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                        double scale, std::optional<double> softcap) {
  const int64_t groups = q.size(1) / k.size(1);
  auto kk = groups > 1 ? k.repeat_interleave(groups, 1) : k;
  auto vv = groups > 1 ? v.repeat_interleave(groups, 1) : v;
  auto scores = at::matmul(q, kk.transpose(2, 3)) * scale;
  if (softcap) scores = at::tanh(scores / *softcap) * *softcap;
  const int64_t q_len = q.size(2), kv_len = kk.size(2);
  at::Tensor visible = mask;
  if (!visible.defined()) {
    auto qpos = at::arange(kv_len - q_len, kv_len, q.options().dtype(at::kLong)).unsqueeze(1);
    visible = at::arange(kv_len, q.options().dtype(at::kLong)).unsqueeze(0) <= qpos;
  }
  scores = scores.masked_fill(visible.logical_not(), -std::numeric_limits<double>::infinity());
  auto probs = at::softmax(scores, -1, at::kFloat).to(q.scalar_type());
  auto out = at::matmul(probs, vv);
  return out.transpose(1, 2).reshape({q.size(0), q_len, q.size(1) * q.size(3)});
}

at::Tensor sliding_window_mask(const at::Tensor& mask, int64_t batch, int64_t q_len, int64_t past, int64_t window,
                               at::Device device) {
  const int64_t kv_len = past + q_len;
  auto base = mask.defined() ? mask : make_attention_mask({}, batch, q_len, kv_len, /*causal=*/true, device);
  auto opts = at::TensorOptions().device(device).dtype(at::kLong);
  auto qpos = at::arange(past, kv_len, opts).unsqueeze(1);
  auto kpos = at::arange(kv_len, opts).unsqueeze(0);
  auto narrowed = base & (kpos > qpos - window).view({1, 1, q_len, kv_len});
  return narrowed | narrowed.logical_not().all(-1, /*keepdim=*/true);
}

namespace {
double num(const nlohmann::json& j, const char* key, double fallback) {
  auto it = j.find(key);
  return it == j.end() || it->is_null() ? fallback : it->get<double>();
}
}  // namespace

RotaryEmbedding::RotaryEmbedding(const nlohmann::json& rope, int64_t head_dim, int64_t max_positions,
                                 bool partial_ok) {
  const std::string type = rope.value("rope_type", rope.value("type", std::string("default")));
  const double theta = num(rope, "rope_theta", 10000.0);
  const double partial = num(rope, "partial_rotary_factor", 1.0);
  if (!(partial > 0.0 && partial <= 1.0))
    throw std::runtime_error("partial_rotary_factor must be in (0, 1], got " + std::to_string(partial));
  const int64_t dim = static_cast<int64_t>(head_dim * partial);
  if (dim != head_dim && !partial_ok) throw std::runtime_error("partial_rotary_factor < 1 is not supported");
  if (dim < 2 || dim > head_dim || dim % 2 != 0)
    throw std::runtime_error("partial_rotary_factor " + std::to_string(partial) + " gives " + std::to_string(dim) +
                             " rotary dims of head_dim " + std::to_string(head_dim) + "; an even number >= 2 is needed");
  // Same arithmetic as transformers: int64 arange cast to float32, then pow in float32.
  auto exponent = at::arange(0, dim, 2, at::kLong).to(at::kFloat) / static_cast<float>(dim);
  inv_freq_ = 1.0 / at::pow(theta, exponent);
  if (type == "default") {
  } else if (type == "linear") {
    inv_freq_ = inv_freq_ / num(rope, "factor", 1.0);
  } else if (type == "llama3") {
    const double factor = num(rope, "factor", 8.0);
    const double low = num(rope, "low_freq_factor", 1.0);
    const double high = num(rope, "high_freq_factor", 4.0);
    const double old_ctx = num(rope, "original_max_position_embeddings", static_cast<double>(max_positions));
    const double low_wavelen = old_ctx / low, high_wavelen = old_ctx / high;
    auto wavelen = 2 * M_PI / inv_freq_;
    auto scaled = at::where(wavelen > low_wavelen, inv_freq_ / factor, inv_freq_);
    auto smooth = (old_ctx / wavelen - low) / (high - low);
    auto smoothed = (1 - smooth) * scaled / factor + smooth * scaled;
    auto is_medium = (wavelen >= high_wavelen).logical_and(wavelen <= low_wavelen);
    inv_freq_ = at::where(is_medium, smoothed, scaled);
  } else {
    throw std::runtime_error("unsupported rope_type '" + type + "' (supported: default, linear, llama3)");
  }
}

RotaryEmbedding::Angles RotaryEmbedding::angles(const at::Tensor& position_ids, at::ScalarType dtype,
                                                at::Device device) const {
  auto freqs = position_ids.to(device).unsqueeze(-1).to(at::kFloat) * inv_freq_.to(device);  // [b, s, d/2]
  auto emb = at::cat({freqs, freqs}, -1);
  return {(emb.cos() * attention_scaling_).to(dtype).unsqueeze(1), (emb.sin() * attention_scaling_).to(dtype).unsqueeze(1)};
}

void RotaryEmbedding::apply(at::Tensor& q, at::Tensor& k, const Angles& a) {
  if (const int64_t rot = a.cos.size(-1); rot < q.size(-1)) {
    auto q_rot = q.narrow(-1, 0, rot).contiguous(), k_rot = k.narrow(-1, 0, rot).contiguous();
    apply(q_rot, k_rot, a);
    q = at::cat({q_rot, q.narrow(-1, rot, q.size(-1) - rot)}, -1);
    k = at::cat({k_rot, k.narrow(-1, rot, k.size(-1) - rot)}, -1);
    return;
  }
  // bf16 q and k under bf16 autocast feed attention, which casts to bf16: one fused pass
  // each writes them so, instead of fp32 products, a concatenation and a cast.
  if (fused::bf16_autocast_cpu(q) && q.scalar_type() == at::kBFloat16 && k.scalar_type() == at::kBFloat16 &&
      a.cos.scalar_type() == at::kFloat) {
    q = fused::rope_bf16(q, a.cos, a.sin);
    k = fused::rope_bf16(k, a.cos, a.sin);
    return;
  }
  q = fused::rope_aten(q, a.cos, a.sin);
  k = fused::rope_aten(k, a.cos, a.sin);
}

const at::Tensor& DecoderStep::window_mask(const ModelInputs& in, int64_t window, at::Device device) {
  if (!window_mask_.defined()) window_mask_ = sliding_window_mask(mask, in.batch_size(), in.seq_len(), past, window, device);
  return window_mask_;
}

double dtype_lowest(at::ScalarType dtype) {
  switch (dtype) {
    case at::kBFloat16: return static_cast<double>(std::numeric_limits<c10::BFloat16>::lowest());
    case at::kHalf: return static_cast<double>(std::numeric_limits<c10::Half>::lowest());
    case at::kDouble: return std::numeric_limits<double>::lowest();
    default: return static_cast<double>(std::numeric_limits<float>::lowest());
  }
}

at::Tensor rotate_every_two(const at::Tensor& x) {
  auto even = x.slice(-1, 0, x.size(-1), 2), odd = x.slice(-1, 1, x.size(-1), 2);
  return at::stack({-odd, even}, -1).flatten(-2);
}

}  // namespace peft
