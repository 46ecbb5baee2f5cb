// The 16-entry code table looked up for 8 int32 indices with AVX2, shared by the 4-bit
// GEMV and the dequantizer: two 8-lane permutes, blended on the index's bit 3.
#pragma once

#include <immintrin.h>

namespace peft::quant {

__attribute__((target("avx2,fma"))) inline __m256 lookup_avx2(__m256i idx, __m256 lut_lo, __m256 lut_hi) {
  const __m256 from_hi = _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28));  // bit 3 -> sign bit
  return _mm256_blendv_ps(_mm256_permutevar8x32_ps(lut_lo, idx), _mm256_permutevar8x32_ps(lut_hi, idx), from_hi);
}

}  // namespace peft::quant
