#include "quant/dequantize_fast.h"

#include <ATen/ATen.h>
#include <immintrin.h>

#include "quant/lut_avx2.h"
#include "util/cpu_features.h"
#include "util/parallel_for.h"

namespace peft::quant {
namespace {

#define PEFT_AVX2 __attribute__((target("avx2,fma")))

// 16 fp32 lanes to bf16 bits exactly as c10::BFloat16's constructor rounds: to nearest
// even, and every NaN to 0x7FC0.
__attribute__((target("avx512f"))) __m256i to_bf16_bits(__m512 v) {
  const __m512i u = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  __m512i r = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7FFF)), lsb), 16);
  const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  r = _mm512_mask_mov_epi32(r, nan, _mm512_set1_epi32(0x7FC0));
  return _mm512_cvtepi32_epi16(r);
}

// Elements [e0, e1) of the flat weight, e0 and e1 on block boundaries.
template <bool kBf16>
__attribute__((target("avx512f"))) void blocks_avx512(const uint8_t* packed, const float* scales, const float* code,
                                                      int64_t blocksize, int64_t b0, int64_t b1, void* out,
                                                      int64_t origin) {
  const __m512 lut = _mm512_loadu_ps(code);
  const __m512i low = _mm512_set1_epi32(0xF);
  // Even elements come from high nibbles: interleave (hi0, lo0, hi1, lo1, ...).
  const __m512i first = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i second = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
  for (int64_t b = b0; b < b1; ++b) {
    const __m512 s = _mm512_set1_ps(scales[b]);
    const uint8_t* p = packed + b * blocksize / 2;
    for (int64_t g = 0; g < blocksize / 32; ++g, p += 16) {
      const __m512i bytes = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
      const __m512 hi = _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(bytes, 4), lut), s);
      const __m512 lo = _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_and_si512(bytes, low), lut), s);
      const __m512 a = _mm512_permutex2var_ps(hi, first, lo), c = _mm512_permutex2var_ps(hi, second, lo);
      const int64_t e = b * blocksize + g * 32 - origin;  // where the flat element lands in out
      if constexpr (kBf16) {
        auto* o = static_cast<uint16_t*>(out) + e;
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(o), to_bf16_bits(a));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + 16), to_bf16_bits(c));
      } else {
        float* o = static_cast<float*>(out) + e;
        _mm512_storeu_ps(o, a);
        _mm512_storeu_ps(o + 16, c);
      }
    }
  }
}

// 8 fp32 lanes to bf16 bits, rounded as c10::BFloat16 rounds (to nearest even, NaN 0x7FC0).
PEFT_AVX2 inline __m256i to_bf16_bits_avx2(__m256 v) {
  const __m256i u = _mm256_castps_si256(v);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  const __m256i r = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7FFF)), lsb), 16);
  const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
  return _mm256_blendv_epi8(r, _mm256_set1_epi32(0x7FC0), nan);
}

// AVX2 (hosts without AVX-512): 8 bytes (16 elements) at a time. The table, scaled by the
// block's absmax once, is looked up with lookup_avx2; unpacks put each byte's high-nibble
// element before its low one.
template <bool kBf16>
PEFT_AVX2 void blocks_avx2(const uint8_t* packed, const float* scales, const float* code, int64_t blocksize,
                           int64_t b0, int64_t b1, void* out, int64_t origin) {
  const __m256 code_lo = _mm256_loadu_ps(code), code_hi = _mm256_loadu_ps(code + 8);
  const __m256i low = _mm256_set1_epi32(0xF);
  for (int64_t b = b0; b < b1; ++b) {
    const __m256 s = _mm256_set1_ps(scales[b]);
    const __m256 lut_lo = _mm256_mul_ps(code_lo, s), lut_hi = _mm256_mul_ps(code_hi, s);
    const uint8_t* p = packed + b * blocksize / 2;
    for (int64_t g = 0; g < blocksize / 16; ++g, p += 8) {
      const __m256i bytes = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
      const __m256 hi = lookup_avx2(_mm256_srli_epi32(bytes, 4), lut_lo, lut_hi);
      const __m256 lo = lookup_avx2(_mm256_and_si256(bytes, low), lut_lo, lut_hi);
      const __m256 x = _mm256_unpacklo_ps(hi, lo), y = _mm256_unpackhi_ps(hi, lo);  // pairs 0,1,4,5 and 2,3,6,7
      const __m256 a = _mm256_permute2f128_ps(x, y, 0x20), c = _mm256_permute2f128_ps(x, y, 0x31);
      const int64_t e = b * blocksize + g * 16 - origin;
      if constexpr (kBf16) {
        const __m256i packed16 = _mm256_packus_epi32(to_bf16_bits_avx2(a), to_bf16_bits_avx2(c));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(static_cast<uint16_t*>(out) + e),
                            _mm256_permute4x64_epi64(packed16, 0xD8));
      } else {
        float* o = static_cast<float*>(out) + e;
        _mm256_storeu_ps(o, a);
        _mm256_storeu_ps(o + 8, c);
      }
    }
  }
}

// Blocks [b0, b1) of the flat weight into out, the block's first element landing at
// out[b * blocksize - origin]: one of the bodies above.
using BlocksFn = void (*)(const uint8_t*, const float*, const float*, int64_t, int64_t, int64_t, void*, int64_t);

// The body for this CPU and output dtype (blocks of a multiple of 32), or null.
BlocksFn vector_body(const at::Tensor& out, DequantBody wanted) {
  const bool bf16 = out.scalar_type() == at::kBFloat16;
  if (wanted == DequantBody::kBest && cpu_has_avx512f()) return bf16 ? blocks_avx512<true> : blocks_avx512<false>;
  if (wanted != DequantBody::kPortable && cpu_has_avx2_fma()) return bf16 ? blocks_avx2<true> : blocks_avx2<false>;
  return nullptr;
}

// Rows [r0, r1), columns [c0, c1) (block-aligned) of a weight with `cols` per row.
void tile_vector(BlocksFn blocks, const uint8_t* packed, const float* scales, const float* code, int64_t blocksize,
                 int64_t cols, int64_t r0, int64_t r1, int64_t c0, int64_t c1, void* out) {
  const int64_t width = c1 - c0, per_row = width / blocksize;
  at::parallel_for(r0, r1, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, width)), [&](int64_t a, int64_t b) {
    for (int64_t r = a; r < b; ++r) {
      const int64_t first = (r * cols + c0) / blocksize;
      // Flat element r * cols + c0 lands at the start of the tile's row r - r0.
      const int64_t origin = (r * cols + c0) - (r - r0) * width;
      blocks(packed, scales, code, blocksize, first, first + per_row, out, origin);
    }
  });
}

}  // namespace

void dequantize_rows_fast(const at::Tensor& packed, const QuantState4bit& st, const at::Tensor& scales,
                          const at::Tensor& out, DequantBody body) {
  const bool whole_blocks = st.blocksize % 32 == 0 && st.numel() % st.blocksize == 0;
  const bool fits = (out.scalar_type() == at::kFloat || out.scalar_type() == at::kBFloat16) && out.is_contiguous() &&
                    packed.is_contiguous() && packed.element_size() == 1 && packed.device().is_cpu();
  const BlocksFn blocks = whole_blocks && fits ? vector_body(out, body) : nullptr;
  if (!blocks) return dequantize_4bit_rows(packed, st, scales, 0, st.rows(), out);
  const auto* p = static_cast<const uint8_t*>(packed.const_data_ptr());
  const float* s = scales.const_data_ptr<float>();
  const float* code = code_table(st.type).data();
  void* o = out.data_ptr();
  at::parallel_for(0, st.blocks(), std::max<int64_t>(1, 16384 / st.blocksize),
                   [&](int64_t b0, int64_t b1) { blocks(p, s, code, st.blocksize, b0, b1, o, 0); });
}

void dequantize_tile(const at::Tensor& packed, const QuantState4bit& st, const at::Tensor& scales, int64_t r0,
                     int64_t r1, int64_t c0, int64_t c1, const at::Tensor& out, DequantBody body) {
  const int64_t cols = st.cols(), bs = st.blocksize;
  const bool aligned = bs % 32 == 0 && cols % bs == 0 && c0 % bs == 0 && c1 % bs == 0;
  const bool fits = (out.scalar_type() == at::kFloat || out.scalar_type() == at::kBFloat16) && out.is_contiguous() &&
                    packed.is_contiguous() && packed.element_size() == 1 && packed.device().is_cpu();
  if (const BlocksFn blocks = aligned && fits ? vector_body(out, body) : nullptr) {
    tile_vector(blocks, static_cast<const uint8_t*>(packed.const_data_ptr()), scales.const_data_ptr<float>(),
                code_table(st.type).data(), bs, cols, r0, r1, c0, c1, out.data_ptr());
    return;
  }
  if (c0 == 0 && c1 == cols) return dequantize_4bit_rows(packed, st, scales, r0, r1, out);
  at::Tensor rows = at::empty({r1 - r0, cols}, out.options());
  dequantize_4bit_rows(packed, st, scales, r0, r1, rows);
  out.copy_(rows.narrow(1, c0, c1 - c0));
}

}  // namespace peft::quant
