#include "models/decode_attention.h"

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <c10/core/GradMode.h>
#include <c10/util/BFloat16.h>
#include <immintrin.h>

#include <cmath>
#include <limits>
#include <vector>

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
  if (mx == kHidden) return 0;
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

// The steps of one query head, around the body's two row operations: dot(k row) for the
// scores of the visible keys, softmax, and axpy(p, v row) into acc for the weighted sum.
// Always inlined, so that in the AVX-512 body the vector row operations inline too.
template <class E, class Dot, class Axpy>
__attribute__((always_inline)) inline void attend_head(const Job& j, const Head<E>& x, float* scores, float* acc,
                                                       const Dot& dot, const Axpy& axpy) {
  float mx = kHidden;
  for (int64_t t = 0; t < j.len; ++t) {
    if (x.visible && !x.visible[t]) {
      scores[t] = kHidden;
      continue;
    }
    scores[t] = dot(x.k + t * j.k_st) * j.scale;
    mx = std::max(mx, scores[t]);
  }
  const float sum = exponentiate(scores, j.len, mx);
  std::fill(acc, acc + j.dim, 0.0f);
  for (int64_t t = 0; t < j.len; ++t)
    if (scores[t] != 0) axpy(scores[t], x.v + t * j.v_st);
  write_out(x.out, acc, j.dim, sum);
}

// ---- portable body --------------------------------------------------------------------

template <class E>
struct PortableRows {
  const E* q;
  float* acc;
  int64_t d;
  float operator()(const E* k) const {
    float s = 0;
    for (int64_t i = 0; i < d; ++i) s += static_cast<float>(q[i]) * static_cast<float>(k[i]);
    return s;
  }
  void operator()(float p, const E* v) const {
    for (int64_t i = 0; i < d; ++i) acc[i] += p * static_cast<float>(v[i]);
  }
};

template <class E>
void head_portable(const Job& j, int64_t bh, float* scores, float* acc) {
  const Head<E> x(j, bh);
  const PortableRows<E> rows{x.q, acc, j.dim};
  attend_head(j, x, scores, acc, rows, rows);
}

// ---- AVX-512 body ---------------------------------------------------------------------

#define PEFT_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl")))

PEFT_AVX512 inline __mmask16 tail(int64_t left) {
  return left >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << left) - 1);
}
PEFT_AVX512 inline __m512 load16(const float* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
PEFT_AVX512 inline __m512 load16(const c10::BFloat16* p, __mmask16 m) {
  const __m256i raw = _mm256_maskz_loadu_epi16(m, p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
}

// qf: q in fp32; a score is the same sum as the portable one, in 16-lane partial sums.
// (Member functions, not lambdas: GCC does not give a lambda its function's target.)
template <class E>
struct Avx512Rows {
  const float* qf;
  float* acc;
  int64_t d;
  PEFT_AVX512 float operator()(const E* k) const {
    __m512 s = _mm512_setzero_ps();
    for (int64_t i = 0; i < d; i += 16) {
      const __mmask16 m = tail(d - i);
      s = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, qf + i), load16(k + i, m), s);
    }
    return _mm512_reduce_add_ps(s);
  }
  PEFT_AVX512 void operator()(float p, const E* v) const {
    const __m512 vp = _mm512_set1_ps(p);
    for (int64_t i = 0; i < d; i += 16) {
      const __mmask16 m = tail(d - i);
      _mm512_mask_storeu_ps(acc + i, m, _mm512_fmadd_ps(vp, load16(v + i, m), _mm512_maskz_loadu_ps(m, acc + i)));
    }
  }
};

template <class E>
PEFT_AVX512 void head_avx512(const Job& j, int64_t bh, float* scores, float* acc, float* qf) {
  const Head<E> x(j, bh);
  for (int64_t i = 0; i < j.dim; ++i) qf[i] = static_cast<float>(x.q[i]);
  const Avx512Rows<E> rows{qf, acc, j.dim};
  attend_head(j, x, scores, acc, rows, rows);
}

bool cpu_has_avx512() {
  static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512vl");
  return has;
}

// Query heads over the intra-op threads, each with its own scratch; a head's result does
// not depend on which thread computes it.
template <class E>
void run(const Job& j, int64_t batch, bool vector) {
  const int64_t n = batch * j.heads;
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 15) / std::max<int64_t>(1, j.len * j.dim));
  at::parallel_for(0, n, grain, [&](int64_t h0, int64_t h1) {
    std::vector<float> scores(j.len), acc(j.dim), qf(j.dim);
    for (int64_t bh = h0; bh < h1; ++bh) {
      if (vector) head_avx512<E>(j, bh, scores.data(), acc.data(), qf.data());
      else head_portable<E>(j, bh, scores.data(), acc.data());
    }
  });
}

at::Tensor compute(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                   double scale, bool vector) {
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
  vector = vector && cpu_has_avx512();
  if (q.scalar_type() == at::kFloat) run<float>(j, b, vector);
  else run<c10::BFloat16>(j, b, vector);
  return out;
}

}  // namespace

bool decode_attention_applies(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask) {
  if (q.dim() != 4 || k.dim() != 4 || v.dim() != 4 || q.size(2) != 1 || !q.device().is_cpu()) return false;
  const auto dt = q.scalar_type();
  if ((dt != at::kFloat && dt != at::kBFloat16) || k.scalar_type() != dt || v.scalar_type() != dt ||
      !k.device().is_cpu() || !v.device().is_cpu())
    return false;
  if (at::GradMode::is_enabled() && (q.requires_grad() || k.requires_grad() || v.requires_grad())) return false;
  if (at::autocast::is_autocast_enabled(at::kCPU)) return false;
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
                            double scale) {
  return compute(q, k, v, mask, scale, /*vector=*/true);
}

at::Tensor decode_attention_portable(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                     const at::Tensor& mask, double scale) {
  return compute(q, k, v, mask, scale, /*vector=*/false);
}

}  // namespace peft
