#include "models/few_row_bf16.h"

#include <ATen/ATen.h>
#include <c10/util/BFloat16.h>
#include <immintrin.h>

#include "models/simd_lanes.h"
#include "util/cpu_features.h"
#include "util/parallel_for.h"

#define PEFT_AVX512_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))

namespace peft {
namespace {

struct Job {
  const uint16_t* x;  // [rows, in] bf16 bits
  const uint16_t* w;  // [out, in]
  const uint16_t* b;  // [out] or null
  uint16_t* y;        // [rows, out]
  int64_t rows, in, out;
};

PEFT_AVX512_BF16 inline __m512bh load_pairs(const uint16_t* p, __mmask32 m) {
  return (__m512bh)_mm512_maskz_loadu_epi16(m, p);
}

// Features o .. o + F - 1 for rows r0 .. r0 + R - 1, one accumulator per pair: each weight
// load serves R rows and each x load F features, 32 products per instruction. With
// F * R = 16 the sums come out as one vector, lane f * R + r.
template <int F, int R>
PEFT_AVX512_BF16 void block(const Job& j, int64_t o, int64_t r0) {
  __m512 acc[F * R];
#pragma GCC unroll 16
  for (auto& a : acc) a = _mm512_setzero_ps();
  const uint16_t* w = j.w + o * j.in;
  const uint16_t* x = j.x + r0 * j.in;
  // The next block's rows, line for line as these are read: F interleaved short rows are
  // more streams than a hardware prefetcher may follow (within noise on Zen 4; cheap).
  const char* ahead = reinterpret_cast<const char*>(w + F * j.in);
  for (int64_t i = 0; i < j.in; i += 32) {
    const __mmask32 m = j.in - i >= 32 ? ~0u : (1u << (j.in - i)) - 1;  // masked lanes add 0
    // Fully unrolled, so that the accumulators live in registers (indexed, they stay on
    // the stack and every product goes through memory).
#pragma GCC unroll 16
    for (int f = 0; f < F; ++f) _mm_prefetch(ahead + 2 * (f * j.in + i), _MM_HINT_T0);
    __m512bh xs[R];
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) xs[r] = load_pairs(x + r * j.in + i, m);
#pragma GCC unroll 16
    for (int f = 0; f < F; ++f) {
      const __m512bh wf = load_pairs(w + f * j.in + i, m);
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) acc[f * R + r] = _mm512_dpbf16_ps(acc[f * R + r], wf, xs[r]);
    }
  }
  float total[F * R];
  if constexpr (F * R == 16) {
    __m512 sums[16];  // a copy: acc itself must not have its address taken, or it lives in memory
#pragma GCC unroll 16
    for (int k = 0; k < 16; ++k) sums[k] = acc[k];
    _mm512_storeu_ps(total, simd::Avx512::sums(sums));
  } else {
    for (int k = 0; k < F * R; ++k) total[k] = _mm512_reduce_add_ps(acc[k]);
  }
  for (int f = 0; f < F; ++f) {
    const float bias = j.b ? static_cast<float>(c10::BFloat16(j.b[o + f], c10::BFloat16::from_bits())) : 0.0f;
    for (int r = 0; r < R; ++r) j.y[(r0 + r) * j.out + o + f] = c10::BFloat16(total[f * R + r] + bias).x;
  }
}

// One row, one feature: four accumulators over consecutive parts of the row, so that the
// weight streams in order (the 16-feature block's 16 interleaved streams were slower).
PEFT_AVX512_BF16 void single(const Job& j, int64_t o, int64_t r) {
  __m512 acc[4];
  for (auto& a : acc) a = _mm512_setzero_ps();
  const uint16_t* w = j.w + o * j.in;
  const uint16_t* x = j.x + r * j.in;
  int64_t i = 0;
  for (; i + 128 <= j.in; i += 128)
    for (int u = 0; u < 4; ++u)
      acc[u] = _mm512_dpbf16_ps(acc[u], load_pairs(w + i + 32 * u, ~0u), load_pairs(x + i + 32 * u, ~0u));
  for (; i < j.in; i += 32) {
    const __mmask32 m = j.in - i >= 32 ? ~0u : (1u << (j.in - i)) - 1;
    acc[0] = _mm512_dpbf16_ps(acc[0], load_pairs(w + i, m), load_pairs(x + i, m));
  }
  const float bias = j.b ? static_cast<float>(c10::BFloat16(j.b[o], c10::BFloat16::from_bits())) : 0.0f;
  const float sum = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3])));
  j.y[r * j.out + o] = c10::BFloat16(sum + bias).x;
}

// Output features [o0, o1), 4 at a time: every row of x against those 4 weight rows (4 rows
// at a time, then 2, then a last one feature by feature) while they are in cache; then the
// last features one at a time.
void features(const Job& j, int64_t o0, int64_t o1) {
  int64_t o = o0;
  for (; o + 4 <= o1; o += 4) {
    int64_t r = 0;
    for (; r + 4 <= j.rows; r += 4) block<4, 4>(j, o, r);
    for (; r + 2 <= j.rows; r += 2) block<4, 2>(j, o, r);
    for (; r < j.rows; ++r)
      for (int64_t f = 0; f < 4; ++f) single(j, o + f, r);
  }
  for (; o < o1; ++o)
    for (int64_t r = 0; r < j.rows; ++r) single(j, o, r);
}

}  // namespace

bool few_row_bf16_supported() {
  return cpu_has_avx512_bf16() && !cpu_has_amx_bf16();
}

at::Tensor few_row_linear_bf16(const at::Tensor& x2d, const at::Tensor& weight, const at::Tensor& bias) {
  const int64_t rows = x2d.size(0), in = x2d.size(1), out = weight.size(0);
  at::Tensor y = at::empty({rows, out}, x2d.options());
  const Job j{reinterpret_cast<const uint16_t*>(x2d.const_data_ptr()),
              reinterpret_cast<const uint16_t*>(weight.const_data_ptr()),
              bias.defined() ? reinterpret_cast<const uint16_t*>(bias.const_data_ptr()) : nullptr,
              reinterpret_cast<uint16_t*>(y.data_ptr()), rows, in, out};
  // Runs of whole 16-feature blocks per thread (the last run takes the remainder).
  const int64_t blocks = (out + 15) / 16;
  at::parallel_for(0, blocks, 4, [&](int64_t b0, int64_t b1) { features(j, b0 * 16, std::min(out, b1 * 16)); });
  return y;
}

}  // namespace peft
