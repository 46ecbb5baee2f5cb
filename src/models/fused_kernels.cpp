#include "models/fused_kernels.h"

#include <immintrin.h>

#include <atomic>
#include <cmath>
#include <cstring>

#include "util/cpu_features.h"

// This file is compiled with -ffp-contract=off (CMakeLists.txt): the rotary products are
// rounded as ATen rounds q * cos + rotate_half(q) * sin, so the bf16 result is the cast
// autocast would make of the unfused fp32 one.

namespace peft::fused_kernels {

namespace {

std::atomic<bool> forced_scalar{false};

bool avx512bf16() {
  return cpu_has_avx512_bf16() && !forced_scalar.load(std::memory_order_relaxed);
}

// ---- scalar bodies --------------------------------------------------------------------

float from_bf16(bf16_bits b) {
  uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

bf16_bits to_bf16(float f) {  // round to nearest even, as c10::BFloat16
  if (std::isnan(f)) return 0x7fc0;
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  u += 0x7fff + ((u >> 16) & 1);
  return static_cast<bf16_bits>(u >> 16);
}

void rms_norm_forward_scalar(const float* x, const float* w, bf16_bits* y, float* rstd, int64_t rows, int64_t n,
                             float eps) {
  for (int64_t r = 0; r < rows; ++r, x += n, y += n) {
    float ss = 0;
    for (int64_t j = 0; j < n; ++j) ss += x[j] * x[j];
    const float rs = 1.0f / std::sqrt(ss / static_cast<float>(n) + eps);
    rstd[r] = rs;
    for (int64_t j = 0; j < n; ++j) y[j] = to_bf16(w[j] * (x[j] * rs));
  }
}

void rms_norm_backward_scalar(const bf16_bits* g, const float* x, const float* w, const float* rstd, float* dx,
                              int64_t rows, int64_t n) {
  for (int64_t r = 0; r < rows; ++r, g += n, x += n, dx += n) {
    float dot = 0;
    for (int64_t j = 0; j < n; ++j) dot += from_bf16(g[j]) * w[j] * x[j];
    const float rs = rstd[r], c = dot * rs * rs * rs / static_cast<float>(n);
    for (int64_t j = 0; j < n; ++j) dx[j] = rs * (from_bf16(g[j]) * w[j]) - c * x[j];
  }
}

void rope_rows_scalar(const bf16_bits* x, const float* cos, const float* sin, bf16_bits* y, int64_t heads, int64_t d,
                      bool backward) {
  const int64_t h = d / 2;
  for (int64_t k = 0; k < heads; ++k, x += d, y += d) {
    for (int64_t i = 0; i < h; ++i) {
      const float x1 = from_bf16(x[i]), x2 = from_bf16(x[i + h]);
      const float a = x1 * cos[i], b = x2 * cos[i + h];
      if (!backward) {
        y[i] = to_bf16(a - x2 * sin[i]);
        y[i + h] = to_bf16(b + x1 * sin[i + h]);
      } else {
        y[i] = to_bf16(a + x2 * sin[i + h]);
        y[i + h] = to_bf16(b - x1 * sin[i]);
      }
    }
  }
}

void silu_mul_forward_scalar(const bf16_bits* g, const bf16_bits* u, bf16_bits* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float gf = from_bf16(g[i]);
    y[i] = to_bf16(gf / (1.0f + std::exp(-gf)) * from_bf16(u[i]));
  }
}

void silu_mul_backward_scalar(const bf16_bits* dy, const bf16_bits* g, const bf16_bits* u, bf16_bits* dg,
                              bf16_bits* du, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float gf = from_bf16(g[i]), d = from_bf16(dy[i]);
    const float s = 1.0f / (1.0f + std::exp(-gf));
    dg[i] = to_bf16(d * from_bf16(u[i]) * (s * (1.0f + gf * (1.0f - s))));
    du[i] = to_bf16(d * (gf * s));
  }
}

void cross_entropy_rows_scalar(bf16_bits* logits, const int64_t* targets, float* loss, int64_t rows, int64_t v,
                               bool want_grad) {
  for (int64_t r = 0; r < rows; ++r, logits += v) {
    float mx = -INFINITY;
    for (int64_t j = 0; j < v; ++j) mx = std::max(mx, from_bf16(logits[j]));
    float sum = 0;
    for (int64_t j = 0; j < v; ++j) sum += std::exp(from_bf16(logits[j]) - mx);
    const float target_logit = from_bf16(logits[targets[r]]);
    loss[r] = std::log(sum) + mx - target_logit;
    if (!want_grad) continue;
    const float inv = 1.0f / sum;
    for (int64_t j = 0; j < v; ++j) logits[j] = to_bf16(std::exp(from_bf16(logits[j]) - mx) * inv);
    logits[targets[r]] = to_bf16(std::exp(target_logit - mx) * inv - 1.0f);
  }
}

// ---- AVX-512 bodies -------------------------------------------------------------------

#define PEFT_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

PEFT_AVX512 inline __mmask16 tail_mask(int64_t left) {
  return left >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << left) - 1);
}

PEFT_AVX512 inline __m512 load_bf16(const bf16_bits* p, __mmask16 m) {
  __m256i raw = _mm256_maskz_loadu_epi16(m, p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
}

PEFT_AVX512 inline void store_bf16(bf16_bits* p, __m512 v, __mmask16 m) {
  _mm256_mask_storeu_epi16(p, m, reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(v)));
}

PEFT_AVX512 void rms_norm_forward_avx512(const float* x, const float* w, bf16_bits* y, float* rstd, int64_t rows,
                                         int64_t n, float eps) {
  for (int64_t r = 0; r < rows; ++r, x += n, y += n) {
    __m512 acc = _mm512_setzero_ps();
    for (int64_t j = 0; j < n; j += 16) {
      __m512 v = _mm512_maskz_loadu_ps(tail_mask(n - j), x + j);
      acc = _mm512_fmadd_ps(v, v, acc);
    }
    const float rs = 1.0f / std::sqrt(_mm512_reduce_add_ps(acc) / static_cast<float>(n) + eps);
    rstd[r] = rs;
    const __m512 vr = _mm512_set1_ps(rs);
    for (int64_t j = 0; j < n; j += 16) {
      const __mmask16 m = tail_mask(n - j);
      __m512 h = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + j), vr);
      store_bf16(y + j, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, w + j), h), m);
    }
  }
}

PEFT_AVX512 void rms_norm_backward_avx512(const bf16_bits* g, const float* x, const float* w, const float* rstd,
                                          float* dx, int64_t rows, int64_t n) {
  for (int64_t r = 0; r < rows; ++r, g += n, x += n, dx += n) {
    __m512 acc = _mm512_setzero_ps();
    for (int64_t j = 0; j < n; j += 16) {
      const __mmask16 m = tail_mask(n - j);
      __m512 gw = _mm512_mul_ps(load_bf16(g + j, m), _mm512_maskz_loadu_ps(m, w + j));
      acc = _mm512_fmadd_ps(gw, _mm512_maskz_loadu_ps(m, x + j), acc);
    }
    const float rs = rstd[r], c = _mm512_reduce_add_ps(acc) * rs * rs * rs / static_cast<float>(n);
    const __m512 vr = _mm512_set1_ps(rs), vc = _mm512_set1_ps(c);
    for (int64_t j = 0; j < n; j += 16) {
      const __mmask16 m = tail_mask(n - j);
      __m512 gw = _mm512_mul_ps(load_bf16(g + j, m), _mm512_maskz_loadu_ps(m, w + j));
      __m512 out = _mm512_sub_ps(_mm512_mul_ps(vr, gw), _mm512_mul_ps(vc, _mm512_maskz_loadu_ps(m, x + j)));
      _mm512_mask_storeu_ps(dx + j, m, out);
    }
  }
}

PEFT_AVX512 void rope_rows_avx512(const bf16_bits* x, const float* cos, const float* sin, bf16_bits* y,
                                  int64_t heads, int64_t d, bool backward) {
  const int64_t h = d / 2;
  for (int64_t k = 0; k < heads; ++k, x += d, y += d) {
    for (int64_t i = 0; i < h; i += 16) {
      const __mmask16 m = tail_mask(h - i);
      const __m512 x1 = load_bf16(x + i, m), x2 = load_bf16(x + h + i, m);
      const __m512 c1 = _mm512_maskz_loadu_ps(m, cos + i), c2 = _mm512_maskz_loadu_ps(m, cos + h + i);
      const __m512 s1 = _mm512_maskz_loadu_ps(m, sin + i), s2 = _mm512_maskz_loadu_ps(m, sin + h + i);
      const __m512 a = _mm512_mul_ps(x1, c1), b = _mm512_mul_ps(x2, c2);
      if (!backward) {
        store_bf16(y + i, _mm512_sub_ps(a, _mm512_mul_ps(x2, s1)), m);
        store_bf16(y + h + i, _mm512_add_ps(b, _mm512_mul_ps(x1, s2)), m);
      } else {
        store_bf16(y + i, _mm512_add_ps(a, _mm512_mul_ps(x2, s2)), m);
        store_bf16(y + h + i, _mm512_sub_ps(b, _mm512_mul_ps(x1, s1)), m);
      }
    }
  }
}

// exp(x) to ~1 ulp: 2^(x log2 e) split into 2^n 2^f, |f| <= 1/2, 2^f by its Taylor series
// to degree 7 (truncation < 1e-8 relative). Overflow gives inf, underflow 0, as expf.
PEFT_AVX512 inline __m512 exp_ps(__m512 x) {
  x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(100.0f)), _mm512_set1_ps(-100.0f));
  const __m512 t = _mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f));
  const __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_mul_ps(_mm512_sub_ps(t, n), _mm512_set1_ps(0.693147180559945309f));  // ln 2^f
  __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
  for (float c : {1.0f / 720.0f, 1.0f / 120.0f, 1.0f / 24.0f, 1.0f / 6.0f, 0.5f, 1.0f, 1.0f})
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(c));
  return _mm512_scalef_ps(p, n);
}

PEFT_AVX512 inline __m512 sigmoid_ps(__m512 g) {
  const __m512 one = _mm512_set1_ps(1.0f);
  return _mm512_div_ps(one, _mm512_add_ps(one, exp_ps(_mm512_sub_ps(_mm512_setzero_ps(), g))));
}

PEFT_AVX512 void silu_mul_forward_avx512(const bf16_bits* g, const bf16_bits* u, bf16_bits* y, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask(n - i);
    const __m512 gf = load_bf16(g + i, m);
    store_bf16(y + i, _mm512_mul_ps(_mm512_mul_ps(gf, sigmoid_ps(gf)), load_bf16(u + i, m)), m);
  }
}

PEFT_AVX512 void silu_mul_backward_avx512(const bf16_bits* dy, const bf16_bits* g, const bf16_bits* u, bf16_bits* dg,
                                          bf16_bits* du, int64_t n) {
  const __m512 one = _mm512_set1_ps(1.0f);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask(n - i);
    const __m512 gf = load_bf16(g + i, m), d = load_bf16(dy + i, m);
    const __m512 s = sigmoid_ps(gf);
    const __m512 ds = _mm512_mul_ps(s, _mm512_fmadd_ps(gf, _mm512_sub_ps(one, s), one));  // silu'(g)
    store_bf16(dg + i, _mm512_mul_ps(_mm512_mul_ps(d, load_bf16(u + i, m)), ds), m);
    store_bf16(du + i, _mm512_mul_ps(d, _mm512_mul_ps(gf, s)), m);
  }
}

// Per row: the maximum, then exp(x - max) summed in fp32, then (for the gradient) the same
// exp again times 1 / sum, rounded once to bf16: three passes over bf16, no fp32 row.
PEFT_AVX512 void cross_entropy_rows_avx512(bf16_bits* logits, const int64_t* targets, float* loss, int64_t rows,
                                           int64_t v, bool want_grad) {
  for (int64_t r = 0; r < rows; ++r, logits += v) {
    __m512 vmax = _mm512_set1_ps(-INFINITY);
    for (int64_t j = 0; j < v; j += 16) {
      const __mmask16 m = tail_mask(v - j);
      vmax = _mm512_mask_max_ps(vmax, m, vmax, load_bf16(logits + j, m));
    }
    const float mx = _mm512_reduce_max_ps(vmax);
    const __m512 vmx = _mm512_set1_ps(mx);
    __m512 vsum = _mm512_setzero_ps();
    const float target_logit = from_bf16(logits[targets[r]]);
    for (int64_t j = 0; j < v; j += 16) {
      const __mmask16 m = tail_mask(v - j);
      const __m512 e = exp_ps(_mm512_sub_ps(load_bf16(logits + j, m), vmx));
      vsum = _mm512_mask_add_ps(vsum, m, vsum, e);
    }
    const float sum = _mm512_reduce_add_ps(vsum);
    loss[r] = std::log(sum) + mx - target_logit;
    if (!want_grad) continue;
    const __m512 inv = _mm512_set1_ps(1.0f / sum);
    for (int64_t j = 0; j < v; j += 16) {
      const __mmask16 m = tail_mask(v - j);
      store_bf16(logits + j, _mm512_mul_ps(exp_ps(_mm512_sub_ps(load_bf16(logits + j, m), vmx)), inv), m);
    }
    logits[targets[r]] = to_bf16(std::exp(target_logit - mx) / sum - 1.0f);
  }
}

}  // namespace

void rms_norm_forward(const float* x, const float* w, bf16_bits* y, float* rstd, int64_t rows, int64_t n, float eps) {
  if (avx512bf16()) return rms_norm_forward_avx512(x, w, y, rstd, rows, n, eps);
  rms_norm_forward_scalar(x, w, y, rstd, rows, n, eps);
}

void rms_norm_backward(const bf16_bits* g, const float* x, const float* w, const float* rstd, float* dx, int64_t rows,
                       int64_t n) {
  if (avx512bf16()) return rms_norm_backward_avx512(g, x, w, rstd, dx, rows, n);
  rms_norm_backward_scalar(g, x, w, rstd, dx, rows, n);
}

void rope_rows(const bf16_bits* x, const float* cos, const float* sin, bf16_bits* y, int64_t heads, int64_t d,
               bool backward) {
  if (avx512bf16()) return rope_rows_avx512(x, cos, sin, y, heads, d, backward);
  rope_rows_scalar(x, cos, sin, y, heads, d, backward);
}

void silu_mul_forward(const bf16_bits* g, const bf16_bits* u, bf16_bits* y, int64_t n) {
  if (avx512bf16()) return silu_mul_forward_avx512(g, u, y, n);
  silu_mul_forward_scalar(g, u, y, n);
}

void silu_mul_backward(const bf16_bits* dy, const bf16_bits* g, const bf16_bits* u, bf16_bits* dg, bf16_bits* du,
                       int64_t n) {
  if (avx512bf16()) return silu_mul_backward_avx512(dy, g, u, dg, du, n);
  silu_mul_backward_scalar(dy, g, u, dg, du, n);
}

void cross_entropy_rows(bf16_bits* logits, const int64_t* targets, float* loss, int64_t rows, int64_t v,
                        bool want_grad) {
  if (avx512bf16()) return cross_entropy_rows_avx512(logits, targets, loss, rows, v, want_grad);
  cross_entropy_rows_scalar(logits, targets, loss, rows, v, want_grad);
}

const char* kernel_isa() { return avx512bf16() ? "avx512bf16" : "scalar"; }

void force_scalar_kernels(bool on) { forced_scalar.store(on, std::memory_order_relaxed); }

}  // namespace peft::fused_kernels
