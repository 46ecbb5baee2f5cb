// Vector operations on fp32 lanes, one struct per instruction set with the same members, so
// that one kernel body serves both (decode_attention.cpp); few_row_bf16.cpp uses the
// AVX-512 across-lane sums. Internal to src/models.
//
// Every member carries its instruction set's target attribute; the body that calls them is
// always inlined into a function with the same attribute, where they inline in turn.
#pragma once

#include <c10/util/BFloat16.h>
#include <immintrin.h>

#include <cstdint>
#include <limits>

#define PEFT_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
#define PEFT_AVX2 __attribute__((target("avx2,fma")))

// exp_nonpositive returns a vector from a function without a target attribute; it is always
// inlined into one that has it, so no call ever passes vectors across that ABI.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"

namespace peft::simd {

// exp(x) for x <= 0 (a score less the maximum), as Cephes' expf computes it: 2^n * p(r)
// with n = round(x / ln 2), r = x - n ln 2 (ln 2 in two parts) and a degree-7 polynomial
// for exp(r) on |r| <= ln(2) / 2; within 2 ulp of expf. x is first raised to
// ln(2^-126), where the result stays a normal number: exp of anything lower is below
// 1.2e-38, and next to the maximum's exp(0) = 1 it is nothing.
struct ExpConstants {
  static constexpr float kLow = -87.3365447505531f, kLog2e = 1.44269504088896341f;
  static constexpr float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
  static constexpr float kP[6] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f,
                                  4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};
};

// That exp for any lane set S (Avx512, Avx2 below): -inf lanes (hidden keys) give 0.
template <class S>
__attribute__((always_inline)) inline typename S::Vec exp_nonpositive(typename S::Vec x) {
  using C = ExpConstants;
  using Vec = typename S::Vec;
  const Vec low = S::max(x, S::set1(C::kLow));
  const Vec n = S::round(S::mul(low, S::set1(C::kLog2e)));
  Vec r = S::fnmadd(n, S::set1(C::kLn2Hi), low);
  r = S::fnmadd(n, S::set1(C::kLn2Lo), r);
  Vec p = S::set1(C::kP[0]);
  for (int i = 1; i < 6; ++i) p = S::fmadd(p, r, S::set1(C::kP[i]));
  p = S::fmadd(p, S::mul(r, r), S::add(r, S::set1(1.0f)));
  return S::zero_where_neg_inf(x, S::mul(p, S::pow2(n)));
}

struct Avx512 {
  using Vec = __m512;
  static constexpr int kLanes = 16;
  // Any head size: the last chunk of a row is a masked load.
  static bool takes(int64_t) { return true; }

  PEFT_AVX512 static __mmask16 first(int64_t n) {
    return n >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << n) - 1);
  }
  PEFT_AVX512 static Vec zero() { return _mm512_setzero_ps(); }
  PEFT_AVX512 static Vec set1(float x) { return _mm512_set1_ps(x); }
  PEFT_AVX512 static Vec load(const float* p, int64_t n = 16) { return _mm512_maskz_loadu_ps(first(n), p); }
  PEFT_AVX512 static Vec load(const c10::BFloat16* p, int64_t n = 16) {
    const __m256i raw = _mm256_maskz_loadu_epi16(first(n), p);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
  }
  PEFT_AVX512 static void store(float* p, Vec v, int64_t n = 16) { _mm512_mask_storeu_ps(p, first(n), v); }
  PEFT_AVX512 static Vec fmadd(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
  PEFT_AVX512 static Vec add(Vec a, Vec b) { return _mm512_add_ps(a, b); }
  PEFT_AVX512 static Vec mul(Vec a, Vec b) { return _mm512_mul_ps(a, b); }
  PEFT_AVX512 static Vec max(Vec a, Vec b) { return _mm512_max_ps(a, b); }
  PEFT_AVX512 static float sum(Vec v) { return _mm512_reduce_add_ps(v); }
  PEFT_AVX512 static float max_of(Vec v) { return _mm512_reduce_max_ps(v); }

  // Lane i: the sum of v[i]'s lanes. Pairs are added with unpacks and shuffles, so that
  // after four rounds each lane holds one vector's total (45 operations for 16 sums).
  PEFT_AVX512 static Vec sums(const Vec* v) {
    Vec c[8], e[4], m[2];
    for (int i = 0; i < 8; ++i)
      c[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]), _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
    for (int i = 0; i < 4; ++i)  // each 128-bit lane: vectors 4i .. 4i+3, its 4 elements summed
      e[i] = _mm512_add_ps(_mm512_shuffle_ps(c[2 * i], c[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                           _mm512_shuffle_ps(c[2 * i], c[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    for (int i = 0; i < 2; ++i)  // then the 128-bit lanes are added in pairs, twice
      m[i] = _mm512_add_ps(_mm512_shuffle_f32x4(e[2 * i], e[2 * i + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                           _mm512_shuffle_f32x4(e[2 * i], e[2 * i + 1], _MM_SHUFFLE(3, 1, 3, 1)));
    return _mm512_add_ps(_mm512_shuffle_f32x4(m[0], m[1], _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(m[0], m[1], _MM_SHUFFLE(3, 1, 3, 1)));
  }
  // -inf in the lanes whose key is not visible.
  PEFT_AVX512 static Vec hide(Vec s, const bool* visible) {
    const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(visible));
    return _mm512_mask_blend_ps(_mm_test_epi8_mask(bytes, bytes), _mm512_set1_ps(-INFINITY), s);
  }
  PEFT_AVX512 static Vec exp(Vec x) { return exp_nonpositive<Avx512>(x); }
  // Parts of exp: round to the nearest integer, 2^n for integral n in the normal range.
  PEFT_AVX512 static Vec round(Vec x) { return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  PEFT_AVX512 static Vec fnmadd(Vec a, Vec b, Vec c) { return _mm512_fnmadd_ps(a, b, c); }
  PEFT_AVX512 static Vec pow2(Vec n) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23));
  }
  PEFT_AVX512 static Vec zero_where_neg_inf(Vec x, Vec v) {
    return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(-INFINITY), _CMP_NEQ_UQ), v);
  }
};

struct Avx2 {
  using Vec = __m256;
  static constexpr int kLanes = 8;
  // Whole chunks only (no masked bf16 loads here): head sizes that are multiples of 8.
  static bool takes(int64_t dim) { return dim % 8 == 0; }

  PEFT_AVX2 static Vec zero() { return _mm256_setzero_ps(); }
  PEFT_AVX2 static Vec set1(float x) { return _mm256_set1_ps(x); }
  PEFT_AVX2 static Vec load(const float* p, int64_t = 8) { return _mm256_loadu_ps(p); }
  PEFT_AVX2 static Vec load(const c10::BFloat16* p, int64_t = 8) {
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(raw), 16));
  }
  PEFT_AVX2 static void store(float* p, Vec v, int64_t = 8) { _mm256_storeu_ps(p, v); }
  PEFT_AVX2 static Vec fmadd(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
  PEFT_AVX2 static Vec add(Vec a, Vec b) { return _mm256_add_ps(a, b); }
  PEFT_AVX2 static Vec mul(Vec a, Vec b) { return _mm256_mul_ps(a, b); }
  PEFT_AVX2 static Vec max(Vec a, Vec b) { return _mm256_max_ps(a, b); }
  PEFT_AVX2 static float sum(Vec v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
  }
  PEFT_AVX2 static float max_of(Vec v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_max_ss(s, _mm_movehdup_ps(s)));
  }
  // Lane i: the sum of v[i]'s lanes (as Avx512::sums, three rounds).
  PEFT_AVX2 static Vec sums(const Vec* v) {
    Vec c[4], e[2];
    for (int i = 0; i < 4; ++i)
      c[i] = _mm256_add_ps(_mm256_unpacklo_ps(v[2 * i], v[2 * i + 1]), _mm256_unpackhi_ps(v[2 * i], v[2 * i + 1]));
    for (int i = 0; i < 2; ++i)
      e[i] = _mm256_add_ps(_mm256_shuffle_ps(c[2 * i], c[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                           _mm256_shuffle_ps(c[2 * i], c[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    return _mm256_add_ps(_mm256_permute2f128_ps(e[0], e[1], 0x20), _mm256_permute2f128_ps(e[0], e[1], 0x31));
  }
  PEFT_AVX2 static Vec hide(Vec s, const bool* visible) {
    const __m256i flags = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(visible)));
    const __m256 off = _mm256_castsi256_ps(_mm256_cmpeq_epi32(flags, _mm256_setzero_si256()));
    return _mm256_blendv_ps(s, _mm256_set1_ps(-INFINITY), off);
  }
  PEFT_AVX2 static Vec exp(Vec x) { return exp_nonpositive<Avx2>(x); }
  PEFT_AVX2 static Vec round(Vec x) { return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  PEFT_AVX2 static Vec fnmadd(Vec a, Vec b, Vec c) { return _mm256_fnmadd_ps(a, b, c); }
  PEFT_AVX2 static Vec pow2(Vec n) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23));
  }
  PEFT_AVX2 static Vec zero_where_neg_inf(Vec x, Vec v) {
    return _mm256_andnot_ps(_mm256_cmp_ps(x, _mm256_set1_ps(-INFINITY), _CMP_EQ_OQ), v);
  }
};

}  // namespace peft::simd

#pragma GCC diagnostic pop
