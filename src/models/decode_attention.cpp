#include "models/decode_attention.h"

#include <ATen/ATen.h>
#include <c10/util/BFloat16.h>
#include <immintrin.h>

#include <cmath>
#include <limits>
#include <vector>

#include "models/simd_lanes.h"
#include "util/autocast.h"
#include "util/cpu_features.h"
#include "util/parallel_for.h"

namespace peft {
namespace {

constexpr float kHidden = -std::numeric_limits<float>::infinity();

// One decode step's operands, as element pointers and element strides (rows contiguous).
struct Job {
  int64_t heads = 0, group = 1, len = 0, dim = 0;
  const void *q = nullptr, *k = nullptr, *v = nullptr;
  int64_t q_sb = 0, q_sh = 0, k_sb = 0, k_sh = 0, k_st = 0, v_sb = 0, v_sh = 0, v_st = 0;
  const bool* mask = nullptr;  // [b or 1, T] visible keys; null: all
  int64_t mask_sb = 0;
  float scale = 1;
  void* out = nullptr;  // [b, heads, dim], contiguous
};

// Where query head bh (= batch * heads + head) reads and writes.
template <class E>
struct Head {
  const E *q, *k, *v;
  const bool* visible;
  E* out;
  Head(const Job& j, int64_t bh) {
    const int64_t b = bh / j.heads, h = bh % j.heads, kh = h / j.group;
    q = static_cast<const E*>(j.q) + b * j.q_sb + h * j.q_sh;
    k = static_cast<const E*>(j.k) + b * j.k_sb + kh * j.k_sh;
    v = static_cast<const E*>(j.v) + b * j.v_sb + kh * j.v_sh;
    visible = j.mask ? j.mask + b * j.mask_sb : nullptr;
    out = static_cast<E*>(j.out) + bh * j.dim;
  }
};

// The scores become exp(score - max) in place; returns their sum (0: every key hidden).
float exponentiate(float* scores, int64_t len, float mx) {
  if (mx == kHidden) {  // every key hidden: weights of 0, not -inf, so the sum of rows is 0
    std::fill(scores, scores + len, 0.0f);
    return 0;
  }
  float sum = 0;
  for (int64_t t = 0; t < len; ++t) {
    const float p = scores[t] == kHidden ? 0.0f : std::exp(scores[t] - mx);
    scores[t] = p;
    sum += p;
  }
  return sum;
}

template <class E>
void write_out(E* out, const float* acc, int64_t dim, float sum) {
  const float inv = sum > 0 ? 1.0f / sum : 0.0f;
  for (int64_t i = 0; i < dim; ++i) out[i] = static_cast<E>(acc[i] * inv);
}

// ---- portable body --------------------------------------------------------------------

// One query head: scores of the visible keys, softmax, and the weighted sum of value rows.
template <class E>
void head_portable(const Job& j, int64_t bh, float* scores, float* acc) {
  const Head<E> x(j, bh);
  float mx = kHidden;
  for (int64_t t = 0; t < j.len; ++t) {
    if (x.visible && !x.visible[t]) {
      scores[t] = kHidden;
      continue;
    }
    const E* k = x.k + t * j.k_st;
    float s = 0;
    for (int64_t i = 0; i < j.dim; ++i) s += static_cast<float>(x.q[i]) * static_cast<float>(k[i]);
    scores[t] = s * j.scale;
    mx = std::max(mx, scores[t]);
  }
  const float sum = exponentiate(scores, j.len, mx);
  std::fill(acc, acc + j.dim, 0.0f);
  for (int64_t t = 0; t < j.len; ++t) {
    const E* v = x.v + t * j.v_st;
    if (scores[t] != 0)
      for (int64_t i = 0; i < j.dim; ++i) acc[i] += scores[t] * static_cast<float>(v[i]);
  }
  write_out(x.out, acc, j.dim, sum);
}

// ---- SIMD bodies (AVX-512, AVX2) -------------------------------------------------------

using simd::Avx2;
using simd::Avx512;

// The helpers below return vectors without a target of their own; they are always inlined
// into the bodies that have one, so no vector ever crosses a call (GCC warns regardless).
#pragma GCC diagnostic ignored "-Wpsabi"

// q . k as a vector of partial sums (S's lanes); the head's q already in fp32.
template <class S, class E>
__attribute__((always_inline)) inline typename S::Vec partial_dot(const float* qf, const E* k, int64_t dim) {
  typename S::Vec s = S::zero();
  for (int64_t i = 0; i < dim; i += S::kLanes) s = S::fmadd(S::load(qf + i, dim - i), S::load(k + i, dim - i), s);
  return s;
}

// Scores of the visible keys (-inf for the others, and for the padding up to whole
// vectors); returns their maximum. A vector of keys at a time: their partial dot products
// are summed across lanes together (S::sums), which costs a fraction of one reduction each.
template <class S, int kDim, class E>
__attribute__((always_inline)) inline float simd_scores(const Job& j, const Head<E>& x, const float* qf,
                                                        float* scores) {
  constexpr int L = S::kLanes;
  const int64_t dim = kDim > 0 ? kDim : j.dim;
  const typename S::Vec scale = S::set1(j.scale);
  typename S::Vec vmax = S::set1(kHidden);
  int64_t t = 0;
  for (; t + L <= j.len; t += L) {
    typename S::Vec part[L];
    for (int p = 0; p < L; ++p) part[p] = partial_dot<S>(qf, x.k + (t + p) * j.k_st, dim);
    typename S::Vec s = S::mul(S::sums(part), scale);
    if (x.visible) s = S::hide(s, x.visible + t);
    S::store(scores + t, s);
    vmax = S::max(vmax, s);
  }
  float mx = S::max_of(vmax);
  for (; t < j.len; ++t) {
    const bool hidden = x.visible && !x.visible[t];
    scores[t] = hidden ? kHidden : S::sum(partial_dot<S>(qf, x.k + t * j.k_st, dim)) * j.scale;
    mx = std::max(mx, scores[t]);
  }
  for (; t % L != 0; ++t) scores[t] = kHidden;
  return mx;
}

// The scores become exp(score - max) in place (0 for hidden keys); returns their sum.
template <class S>
__attribute__((always_inline)) inline float simd_exponentiate(float* scores, int64_t len, float mx) {
  if (mx == kHidden) {  // every key hidden: weights of 0, not -inf, so the sum of rows is 0
    std::fill(scores, scores + len, 0.0f);
    return 0;
  }
  const typename S::Vec minus_max = S::set1(-mx);
  typename S::Vec sum = S::zero();
  for (int64_t t = 0; t < len; t += S::kLanes) {  // len: padded to whole vectors
    const typename S::Vec p = S::exp(S::add(S::load(scores + t), minus_max));
    S::store(scores + t, p);
    sum = S::add(sum, p);
  }
  return S::sum(sum);
}

// acc = sum_t p_t v_t, one chunk of lanes at a time down all rows, in four independent
// accumulators (an FMA's latency would otherwise bound the loop).
template <class S, int kDim, class E>
__attribute__((always_inline)) inline void simd_values(const Job& j, const Head<E>& x, const float* p, float* acc) {
  constexpr int kChains = 4;
  const int64_t dim = kDim > 0 ? kDim : j.dim;
  for (int64_t c = 0; c < dim; c += S::kLanes) {
    const int64_t n = dim - c;
    typename S::Vec a[kChains];
    for (auto& v : a) v = S::zero();
    const int64_t stride = j.v_st;  // in a register, not reloaded through j
    const E* row = x.v + c;
    int64_t t = 0;
    for (; t + kChains <= j.len; t += kChains, row += kChains * stride)
      for (int u = 0; u < kChains; ++u) a[u] = S::fmadd(S::set1(p[t + u]), S::load(row + u * stride, n), a[u]);
    for (; t < j.len; ++t, row += stride) a[0] = S::fmadd(S::set1(p[t]), S::load(row, n), a[0]);
    typename S::Vec total = a[0];
    for (int u = 1; u < kChains; ++u) total = S::add(total, a[u]);
    S::store(acc + c, total, n);
  }
}

// kDim: the head size when known at compile time (0: j.dim), so that the loops over a
// row unroll without masks.
template <class S, int kDim, class E>
__attribute__((always_inline)) inline void simd_head(const Job& j, int64_t bh, float* scores, float* acc, float* qf) {
  const Head<E> x(j, bh);
  for (int64_t i = 0; i < j.dim; ++i) qf[i] = static_cast<float>(x.q[i]);
  const float mx = simd_scores<S, kDim>(j, x, qf, scores);
  const int64_t padded = (j.len + S::kLanes - 1) / S::kLanes * S::kLanes;
  const float sum = simd_exponentiate<S>(scores, padded, mx);
  simd_values<S, kDim>(j, x, scores, acc);
  write_out(x.out, acc, j.dim, sum);
}

// The usual head sizes (64: LLaMA 3.2, SmolLM2, Qwen2.5, GPT-2; 128: LLaMA 8B, Mistral)
// get their own copies.
template <class E>
PEFT_AVX512 void head_avx512(const Job& j, int64_t bh, float* scores, float* acc, float* qf) {
  if (j.dim == 64) simd_head<Avx512, 64, E>(j, bh, scores, acc, qf);
  else if (j.dim == 128) simd_head<Avx512, 128, E>(j, bh, scores, acc, qf);
  else simd_head<Avx512, 0, E>(j, bh, scores, acc, qf);
}

template <class E>
PEFT_AVX2 void head_avx2(const Job& j, int64_t bh, float* scores, float* acc, float* qf) {
  if (j.dim == 64) simd_head<Avx2, 64, E>(j, bh, scores, acc, qf);
  else if (j.dim == 128) simd_head<Avx2, 128, E>(j, bh, scores, acc, qf);
  else simd_head<Avx2, 0, E>(j, bh, scores, acc, qf);
}

bool cpu_has_avx512() {
  static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  return has;
}

// The body that runs: the widest the CPU has and the head size suits, at most `wanted`.
DecodeBody body_for(DecodeBody wanted, int64_t dim) {
  if (wanted == DecodeBody::kBest && cpu_has_avx512() && Avx512::takes(dim)) return DecodeBody::kBest;
  if (wanted != DecodeBody::kPortable && cpu_has_avx2_fma() && Avx2::takes(dim)) return DecodeBody::kAvx2;
  return DecodeBody::kPortable;
}

// Query heads over the intra-op threads, each with its own scratch; a head's result does
// not depend on which thread computes it.
template <class E>
void run(const Job& j, int64_t batch, DecodeBody body) {
  const int64_t n = batch * j.heads;
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 15) / std::max<int64_t>(1, j.len * j.dim));
  at::parallel_for(0, n, grain, [&](int64_t h0, int64_t h1) {
    std::vector<float> scores((j.len + 15) / 16 * 16), acc(j.dim), qf(j.dim);  // whole vectors of 16
    for (int64_t bh = h0; bh < h1; ++bh) {
      if (body == DecodeBody::kBest) head_avx512<E>(j, bh, scores.data(), acc.data(), qf.data());
      else if (body == DecodeBody::kAvx2) head_avx2<E>(j, bh, scores.data(), acc.data(), qf.data());
      else head_portable<E>(j, bh, scores.data(), acc.data());
    }
  });
}

at::Tensor compute(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                   double scale, DecodeBody body) {
  if (!decode_attention_applies(q, k, v, mask))
    throw std::invalid_argument("decode_attention: operands it does not take (see decode_attention_applies)");
  const int64_t b = q.size(0), h = q.size(1), d = q.size(3);
  at::Tensor out = at::empty({b, 1, h * d}, q.options());
  at::Tensor visible = mask.defined() ? mask.reshape({mask.size(0), mask.size(3)}).contiguous() : at::Tensor();
  Job j;
  j.heads = h;
  j.group = h / k.size(1);
  j.len = k.size(2);
  j.dim = d;
  j.q = q.data_ptr(), j.k = k.data_ptr(), j.v = v.data_ptr();
  j.q_sb = q.stride(0), j.q_sh = q.stride(1);
  j.k_sb = k.stride(0), j.k_sh = k.stride(1), j.k_st = k.stride(2);
  j.v_sb = v.stride(0), j.v_sh = v.stride(1), j.v_st = v.stride(2);
  if (visible.defined()) {
    j.mask = visible.data_ptr<bool>();
    j.mask_sb = visible.size(0) == 1 ? 0 : visible.stride(0);
  }
  j.scale = static_cast<float>(scale);
  j.out = out.data_ptr();
  body = body_for(body, d);
  if (q.scalar_type() == at::kFloat) run<float>(j, b, body);
  else run<c10::BFloat16>(j, b, body);
  return out;
}

}  // namespace

bool decode_attention_applies(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask) {
  if (q.dim() != 4 || k.dim() != 4 || v.dim() != 4 || q.size(2) != 1 || !q.device().is_cpu()) return false;
  const auto dt = q.scalar_type();
  if ((dt != at::kFloat && dt != at::kBFloat16) || k.scalar_type() != dt || v.scalar_type() != dt ||
      !k.device().is_cpu() || !v.device().is_cpu())
    return false;
  if (!plain_cpu_inference(q, k, v)) return false;
  const int64_t b = q.size(0), len = k.size(2), d = q.size(3);
  if (k.size(0) != b || v.size(0) != b || k.size(1) < 1 || q.size(1) % k.size(1) != 0 || v.size(1) != k.size(1) ||
      v.size(2) != len || k.size(3) != d || v.size(3) != d || len < 1 || d < 1)
    return false;
  if (q.stride(3) != 1 || k.stride(3) != 1 || v.stride(3) != 1) return false;
  if (!mask.defined()) return true;
  return mask.scalar_type() == at::kBool && mask.device().is_cpu() && mask.dim() == 4 &&
         (mask.size(0) == 1 || mask.size(0) == b) && mask.size(1) == 1 && mask.size(2) == 1 && mask.size(3) == len;
}

at::Tensor decode_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                            double scale, DecodeBody body) {
  return compute(q, k, v, mask, scale, body);
}

}  // namespace peft
