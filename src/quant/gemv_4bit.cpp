#include "quant/gemv_4bit.h"

#include <ATen/ATen.h>
#include <c10/util/BFloat16.h>
#include <immintrin.h>

#include <array>
#include <type_traits>

#include "quant/lut_avx2.h"
#include "util/cpu_features.h"
#include "util/parallel_for.h"

namespace peft::quant {
namespace {

// Everything one call needs, as raw pointers. x is deinterleaved per 32 elements: for
// each group, its 16 even-index values then its 16 odd-index ones, so the high nibbles
// (even elements) and low nibbles (odd elements) of 16 bytes meet 16 contiguous x values.
struct Job {
  const uint8_t* packed;
  const float* scales;
  const float* code;
  const float* xs;  // [rows, in] deinterleaved
  float* y;         // [rows, out]
  int64_t rows, in, out, blocksize;
};

void rows_scalar(const Job& j, int64_t o0, int64_t o1) {
  const int64_t groups = j.blocksize / 32, blocks = j.in / j.blocksize;
  for (int64_t o = o0; o < o1; ++o) {
    for (int64_t r = 0; r < j.rows; ++r) {
      const float* x = j.xs + r * j.in;
      const uint8_t* p = j.packed + o * (j.in / 2);
      float total = 0.f;
      for (int64_t b = 0; b < blocks; ++b) {
        float acc = 0.f;
        for (int64_t g = 0; g < groups; ++g, p += 16, x += 32)
          for (int k = 0; k < 16; ++k) acc += j.code[p[k] >> 4] * x[k] + j.code[p[k] & 0xF] * x[16 + k];
        total += acc * j.scales[(o * j.in) / j.blocksize + b];
      }
      j.y[r * j.out + o] = total;
    }
  }
}

// Output features [o0, o1) for every row of x, the rows taken 4, then 2, then 1 at a time:
// `fixed(R, o, r0)` computes rows r0 .. r0 + R - 1 of feature o (R an integral_constant, so
// each SIMD body keeps R accumulators in registers).
template <class Fixed>
void rows_in_groups(int64_t rows, int64_t o0, int64_t o1, const Fixed& fixed) {
  for (int64_t o = o0; o < o1; ++o) {
    int64_t r = 0;
    for (; r + 4 <= rows; r += 4) fixed(std::integral_constant<int, 4>(), o, r);
    for (; r + 2 <= rows; r += 2) fixed(std::integral_constant<int, 2>(), o, r);
    for (; r < rows; ++r) fixed(std::integral_constant<int, 1>(), o, r);
  }
}

// AVX-512: 16 bytes widen to 16 int32 lanes; their nibbles index the 16-entry code table
// held in one register (a permute, no memory gather).
constexpr int64_t kPrefetchBytes = 4096;

// One row, bound by the stream of codes: high and low nibbles accumulate separately, so each
// accumulator sees one FMA per 16 bytes (the FMA latency, not the loads, would otherwise
// bound it), and each block's sum is scaled once.
__attribute__((target("avx512f"))) void single_row_avx512(const Job& j, int64_t o0, int64_t o1) {
  const __m512 lut = _mm512_loadu_ps(j.code);
  const __m512i low = _mm512_set1_epi32(0xF);
  const int64_t groups = j.blocksize / 32, blocks = j.in / j.blocksize;
  for (int64_t o = o0; o < o1; ++o) {
    const uint8_t* p = j.packed + o * (j.in / 2);
    const float* scale = j.scales + o * blocks;
    const float* x = j.xs;
    __m512 total = _mm512_setzero_ps();
    for (int64_t b = 0; b < blocks; ++b) {
      __m512 acc_hi = _mm512_setzero_ps(), acc_lo = _mm512_setzero_ps();
      for (int64_t g = 0; g < groups; ++g, p += 16, x += 32) {
        // The stream of codes is the bottleneck: ask for it well ahead of use.
        _mm_prefetch(reinterpret_cast<const char*>(p) + kPrefetchBytes, _MM_HINT_T0);
        const __m512i bytes = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
        acc_hi = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(bytes, 4), lut), _mm512_loadu_ps(x), acc_hi);
        acc_lo = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_and_si512(bytes, low), lut), _mm512_loadu_ps(x + 16),
                                 acc_lo);
      }
      total = _mm512_fmadd_ps(_mm512_add_ps(acc_hi, acc_lo), _mm512_set1_ps(scale[b]), total);
    }
    j.y[o] = _mm512_reduce_add_ps(total);
  }
}

// AVX2 (hosts without AVX-512): 8 bytes widen to 8 int32 lanes; the 16-entry table is two
// 8-lane permutes, blended on the index's bit 3. Same layout and order as the AVX-512 body.
__attribute__((target("avx2,fma"))) inline float sum_avx2(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

template <int R>
__attribute__((target("avx2,fma"))) void rows_avx2_fixed(const Job& j, int64_t o, int64_t r0) {
  const __m256 lut_lo = _mm256_loadu_ps(j.code), lut_hi = _mm256_loadu_ps(j.code + 8);
  const __m256i low = _mm256_set1_epi32(0xF);
  const int64_t groups = j.blocksize / 32, blocks = j.in / j.blocksize;
  const uint8_t* p = j.packed + o * (j.in / 2);
  const float* scale = j.scales + (o * j.in) / j.blocksize;
  __m256 total[R];
  for (int r = 0; r < R; ++r) total[r] = _mm256_setzero_ps();
  int64_t xo = 0;
  for (int64_t b = 0; b < blocks; ++b) {
    __m256 acc_hi[R], acc_lo[R];
    for (int r = 0; r < R; ++r) acc_hi[r] = acc_lo[r] = _mm256_setzero_ps();
    for (int64_t g = 0; g < groups; ++g, p += 16, xo += 32) {
      _mm_prefetch(reinterpret_cast<const char*>(p) + kPrefetchBytes, _MM_HINT_T0);
      for (int h = 0; h < 16; h += 8) {  // bytes h..h+7: x[h..h+7] (high) and x[16+h..] (low)
        const __m256i bytes = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + h)));
        const __m256 hi = lookup_avx2(_mm256_srli_epi32(bytes, 4), lut_lo, lut_hi);
        const __m256 lo = lookup_avx2(_mm256_and_si256(bytes, low), lut_lo, lut_hi);
        for (int r = 0; r < R; ++r) {
          const float* x = j.xs + (r0 + r) * j.in + xo + h;
          acc_hi[r] = _mm256_fmadd_ps(hi, _mm256_loadu_ps(x), acc_hi[r]);
          acc_lo[r] = _mm256_fmadd_ps(lo, _mm256_loadu_ps(x + 16), acc_lo[r]);
        }
      }
    }
    const __m256 s = _mm256_set1_ps(scale[b]);
    for (int r = 0; r < R; ++r) total[r] = _mm256_fmadd_ps(_mm256_add_ps(acc_hi[r], acc_lo[r]), s, total[r]);
  }
  for (int r = 0; r < R; ++r) j.y[(r0 + r) * j.out + o] = sum_avx2(total[r]);
}

void rows_avx2(const Job& j, int64_t o0, int64_t o1) {
  rows_in_groups(j.rows, o0, o1, [&](auto n, int64_t o, int64_t r) { rows_avx2_fixed<n()>(j, o, r); });
}

// The bf16 kernel runs: bf16 compute, AVX512-BF16, blocks of a multiple of 64.
bool bf16_kernel_applies(const Weight4bit& w) {
  return w.compute_dtype == at::kBFloat16 && w.state.blocksize % 64 == 0 && cpu_has_avx512_bf16();
}

// bf16 compute (the usual QLoRA setting) on CPUs with AVX512-BF16: 32 bytes widen to 32
// 16-bit lanes, one permute of a 32-lane table looks up 32 codes, and each dpbf16ps does 32
// multiply-adds. x is bf16, deinterleaved per 64 elements (32 even-index values, then 32
// odd-index ones). Needs blocks of a multiple of 64.
struct JobBf16 {
  const uint8_t* packed;
  const float* scales;
  const float* code;        // the 16 fp32 codes
  const uint16_t* code_bf16;  // the 16 codes rounded to bf16, twice over
  const uint16_t* xs;       // [rows, in] deinterleaved per 64
  float* y;
  int64_t rows, in, out, blocksize;
};

// Two or more rows, in both compute types: tiles of F features x R rows. Each block's 16
// codes are scaled once per feature to the dequantization's own weights (code * absmax in
// fp32, or that rounded to bf16 as bnb's bf16 dequantization rounds it), so products meet
// x directly: each permute of codes serves R rows and each load of x F features, with the
// F x R accumulators in registers (F = R = 4 uses 16 of the 32 in fp32, 31 in bf16). Every
// output's sum runs in the same order whatever F and R, so neither the grouping nor the
// thread split changes a bit. (vcvtne2ps2bf16 flushes a product below 2^-126 to zero where
// c10 would keep a subnormal bf16: a weight under 1e-38.)
//
// One template runs both over a step type saying how a step of packed codes meets x. It is
// compiled for AVX512-BF16 as well; the fp32 step uses only AVX-512 F instructions, and its
// tiles run only where F and BW are (every AVX-512 CPU but the Xeon Phi).
#define PEFT_TILE_TARGET __attribute__((target("avx512f,avx512bw,avx512bf16")))

// fp32: 16 bytes (32 inputs) a step, x deinterleaved per 32 (16 even-index values, then
// 16 odd-index ones); one FMA per 16 weights and row.
struct Fp32Step {
  using Work = Job;
  using X = float;
  using Table = __m512;
  struct Weights { __m512 hi, lo; };  // the high nibbles' weights (even inputs), the low ones'
  struct Inputs { __m512 even, odd; };
  static constexpr int kBytes = 16, kInputs = 32;
  PEFT_TILE_TARGET static Table table(__m512 code, float scale) { return _mm512_mul_ps(code, _mm512_set1_ps(scale)); }
  PEFT_TILE_TARGET static Weights lookup(const uint8_t* p, Table t) {
    const __m512i bytes = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return {_mm512_permutexvar_ps(_mm512_srli_epi32(bytes, 4), t),
            _mm512_permutexvar_ps(_mm512_and_si512(bytes, _mm512_set1_epi32(0xF)), t)};
  }
  PEFT_TILE_TARGET static Inputs load_x(const X* x) { return {_mm512_loadu_ps(x), _mm512_loadu_ps(x + 16)}; }
  PEFT_TILE_TARGET static __m512 madd(__m512 acc, const Weights& w, const Inputs& x) {
    return _mm512_fmadd_ps(w.lo, x.odd, _mm512_fmadd_ps(w.hi, x.even, acc));
  }
};

// bf16 on AVX512-BF16: 32 bytes (64 inputs) a step, 32 16-bit lanes, one permute of a
// 32-lane table looking up 32 codes, and each dpbf16ps doing 32 multiply-adds; x bf16,
// deinterleaved per 64.
struct Bf16Step {
  using Work = JobBf16;
  using X = uint16_t;
  using Table = __m512i;
  struct Weights { __m512bh hi, lo; };
  struct Inputs { __m512bh even, odd; };
  static constexpr int kBytes = 32, kInputs = 64;
  PEFT_TILE_TARGET static Table table(__m512 code, float scale) {
    const __m512 scaled = _mm512_mul_ps(code, _mm512_set1_ps(scale));
    return (__m512i)_mm512_cvtne2ps_pbh(scaled, scaled);
  }
  PEFT_TILE_TARGET static Weights lookup(const uint8_t* p, Table t) {
    const __m512i bytes = _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return {(__m512bh)_mm512_permutexvar_epi16(_mm512_srli_epi16(bytes, 4), t),
            (__m512bh)_mm512_permutexvar_epi16(_mm512_and_si512(bytes, _mm512_set1_epi16(0xF)), t)};
  }
  PEFT_TILE_TARGET static Inputs load_x(const X* x) {
    return {(__m512bh)_mm512_loadu_si512(x), (__m512bh)_mm512_loadu_si512(x + 32)};
  }
  PEFT_TILE_TARGET static __m512 madd(__m512 acc, const Weights& w, const Inputs& x) {
    return _mm512_dpbf16_ps(_mm512_dpbf16_ps(acc, w.hi, x.even), w.lo, x.odd);
  }
};

// Features o0 .. o0 + F - 1 for rows r0 .. r0 + R - 1.
template <class Step, int F, int R>
PEFT_TILE_TARGET __attribute__((always_inline)) inline void tile(const typename Step::Work& j, int64_t o0,
                                                                int64_t r0) {
  const __m512 code = _mm512_loadu_ps(j.code);
  const int64_t steps = j.blocksize / Step::kInputs, blocks = j.in / j.blocksize, row_bytes = j.in / 2;
  const uint8_t* p = j.packed + o0 * row_bytes;
  const float* scale = j.scales + o0 * blocks;
  const typename Step::X* x = j.xs + r0 * j.in;
  __m512 acc[F][R];
#pragma GCC unroll 4
  for (int f = 0; f < F; ++f)
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) acc[f][r] = _mm512_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    for (int64_t g = 0; g < steps; ++g, p += Step::kBytes, x += Step::kInputs) {
      typename Step::Inputs xr[R];
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) xr[r] = Step::load_x(x + r * j.in);
#pragma GCC unroll 4
      for (int f = 0; f < F; ++f) {
        const uint8_t* pf = p + f * row_bytes;
        _mm_prefetch(reinterpret_cast<const char*>(pf) + kPrefetchBytes, _MM_HINT_T0);
        const auto w = Step::lookup(pf, Step::table(code, scale[f * blocks + b]));
#pragma GCC unroll 4
        for (int r = 0; r < R; ++r) acc[f][r] = Step::madd(acc[f][r], w, xr[r]);
      }
    }
  }
#pragma GCC unroll 4
  for (int f = 0; f < F; ++f)
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) j.y[(r0 + r) * j.out + o0 + f] = _mm512_reduce_add_ps(acc[f][r]);
}

// Every row of x for features o0 .. o0 + F - 1: the F weight rows stay in cache while the
// rows of x pass them 4, then 2, then 1 at a time.
template <class Step, int F>
PEFT_TILE_TARGET void features(const typename Step::Work& j, int64_t o0) {
  int64_t r = 0;
  for (; r + 4 <= j.rows; r += 4) tile<Step, F, 4>(j, o0, r);
  for (; r + 2 <= j.rows; r += 2) tile<Step, F, 2>(j, o0, r);
  if (r < j.rows) tile<Step, F, 1>(j, o0, r);
}

template <class Step>
void tiles(const typename Step::Work& j, int64_t o0, int64_t o1) {
  int64_t o = o0;
  for (; o + 4 <= o1; o += 4) features<Step, 4>(j, o);
  for (; o < o1; ++o) features<Step, 1>(j, o);
}

// One row (batch-1 decode), bound by the stream of codes: there the per-block table above
// costs 30% more time than it saves, so the codes are looked up in bf16 unscaled and each
// block's fp32 sum is scaled once (the weight then differs from bnb's bf16 dequantization
// by its rounding, 2^-9 relative at most, far below the 4-bit error). High and low nibbles
// accumulate apart, so each chain sees one dpbf16ps per 32 bytes.
__attribute__((target("avx512f,avx512bw,avx512bf16"))) void single_row_bf16(const JobBf16& j, int64_t o0,
                                                                             int64_t o1) {
  const __m512i lut = _mm512_loadu_si512(j.code_bf16);
  const __m512i low = _mm512_set1_epi16(0xF);
  const int64_t steps = j.blocksize / 64, blocks = j.in / j.blocksize;
  for (int64_t o = o0; o < o1; ++o) {
    const uint8_t* p = j.packed + o * (j.in / 2);
    const float* scale = j.scales + o * blocks;
    const uint16_t* x = j.xs;
    __m512 total = _mm512_setzero_ps();
    for (int64_t b = 0; b < blocks; ++b) {
      __m512 acc_hi = _mm512_setzero_ps(), acc_lo = _mm512_setzero_ps();
      for (int64_t g = 0; g < steps; ++g, p += 32, x += 64) {
        _mm_prefetch(reinterpret_cast<const char*>(p) + kPrefetchBytes, _MM_HINT_T0);
        const __m512i bytes = _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
        const __m512bh hi = (__m512bh)_mm512_permutexvar_epi16(_mm512_srli_epi16(bytes, 4), lut);
        const __m512bh lo = (__m512bh)_mm512_permutexvar_epi16(_mm512_and_si512(bytes, low), lut);
        acc_hi = _mm512_dpbf16_ps(acc_hi, hi, (__m512bh)_mm512_loadu_si512(x));
        acc_lo = _mm512_dpbf16_ps(acc_lo, lo, (__m512bh)_mm512_loadu_si512(x + 32));
      }
      total = _mm512_fmadd_ps(_mm512_add_ps(acc_hi, acc_lo), _mm512_set1_ps(scale[b]), total);
    }
    j.y[o] = _mm512_reduce_add_ps(total);
  }
}

// The 16 codes rounded to bf16 (as ATen rounds), twice over: one 32-lane permute table.
// Made once per type rather than per call, which at decode runs once per layer and token.
const uint16_t* bf16_lut(QuantType type) {
  using Lut = std::array<uint16_t, 32>;
  static const auto make = [](QuantType t) {
    Lut lut;
    for (size_t i = 0; i < lut.size(); ++i) lut[i] = c10::BFloat16(code_table(t)[i % 16]).x;
    return lut;
  };
  static const Lut nf4 = make(QuantType::kNF4), fp4 = make(QuantType::kFP4);
  return type == QuantType::kNF4 ? nf4.data() : fp4.data();
}

at::Tensor gemv_bf16(const at::Tensor& x2d, const at::Tensor& packed, const Weight4bit& w) {
  const int64_t rows = x2d.size(0), in = w.in_features(), out = w.out_features();
  const at::Tensor xs = x2d.to(at::kBFloat16).reshape({rows, in / 64, 32, 2}).transpose(2, 3).contiguous();
  at::Tensor y = at::empty({rows, out}, x2d.options().dtype(at::kFloat));
  const JobBf16 job{static_cast<const uint8_t*>(packed.const_data_ptr()), w.scales.const_data_ptr<float>(),
                    code_table(w.state.type).data(), bf16_lut(w.state.type),
                    reinterpret_cast<const uint16_t*>(xs.const_data_ptr()),
                    y.data_ptr<float>(), rows, in, out, w.state.blocksize};
  at::parallel_for(0, out, 16, [&](int64_t o0, int64_t o1) {
    rows == 1 ? single_row_bf16(job, o0, o1) : tiles<Bf16Step>(job, o0, o1);
  });
  return y;
}

}  // namespace

int64_t gemv_4bit_max_rows(const Weight4bit& w) {
  if (bf16_kernel_applies(w)) return cpu_has_amx_bf16() ? kGemvMaxRows : kGemvMaxRowsTiled;
  return cpu_has_avx512bw() ? kGemvMaxRowsTiled : kGemvMaxRows;
}

bool gemv_4bit_applies(const at::Tensor& x2d, const at::Tensor& packed, const Weight4bit& w) {
  const int64_t bs = w.state.blocksize;
  return x2d.dim() == 2 && x2d.size(0) >= 1 && x2d.size(0) <= gemv_4bit_max_rows(w) && packed.device().is_cpu() &&
         x2d.device().is_cpu() && bs % 32 == 0 && w.in_features() % bs == 0 && packed.is_contiguous() &&
         packed.element_size() == 1;
}

at::Tensor gemv_4bit(const at::Tensor& x2d, const at::Tensor& packed, const Weight4bit& w, GemvKernel kernel) {
  if (kernel == GemvKernel::kBest && bf16_kernel_applies(w)) return gemv_bf16(x2d, packed, w);
  const int64_t rows = x2d.size(0), in = w.in_features(), out = w.out_features();
  // Deinterleave x once per call (it is reused by every output row).
  const at::Tensor xs = x2d.to(at::kFloat).reshape({rows, in / 32, 16, 2}).transpose(2, 3).contiguous();
  at::Tensor y = at::empty({rows, out}, x2d.options().dtype(at::kFloat));
  const Job job{static_cast<const uint8_t*>(packed.const_data_ptr()), w.scales.const_data_ptr<float>(),
                code_table(w.state.type).data(), xs.const_data_ptr<float>(), y.data_ptr<float>(), rows, in,
                out, w.state.blocksize};
  void (*body)(const Job&, int64_t, int64_t) = rows_scalar;
  // One row streams the codes feature by feature (bound by memory, where a scaled table per
  // step would cost more than it saves); more rows take the tiles.
  if (kernel == GemvKernel::kBest && cpu_has_avx512f())
    body = rows == 1 ? single_row_avx512 : cpu_has_avx512bw() ? tiles<Fp32Step> : rows_avx2;
  else if (kernel != GemvKernel::kPortable && cpu_has_avx2_fma()) body = rows_avx2;
  at::parallel_for(0, out, 16, [&](int64_t o0, int64_t o1) { body(job, o0, o1); });
  return y;
}

}  // namespace peft::quant
