// Double quantization: bnb's 8-bit dynamic blockwise quantizer as libbitsandbytes_cpu runs
// it (csrc/cpu_ops.cpp, quantize_cpu_impl), applied to the fp32 absmax, and its inverse.
#include <ATen/ATen.h>

#include <cmath>
#include <limits>
#include <memory>

#include "quant/quant_internal.h"
#include "util/parallel_for.h"

namespace peft::quant {
namespace {

constexpr int kLutSize = 65536;

// build_quantize_lut: the nearest code (first on ties) for 65536 evenly spaced values in
// [-1, 1]. bnb quantizes through this table, not by exact nearest search, so we do too.
std::unique_ptr<uint8_t[]> build_lut(const std::vector<float>& code) {
  float mid[255];
  for (int i = 0; i < 255; ++i) mid[i] = 0.5f * (code[i] + code[i + 1]);
  auto lut = std::make_unique<uint8_t[]>(kLutSize);
  int idx = 0;
  for (int i = 0; i < kLutSize; ++i) {
    const float val = -1.0f + (2.0f * static_cast<float>(i)) / static_cast<float>(kLutSize - 1);
    while (idx < 255 && mid[idx] < val) ++idx;
    lut[i] = static_cast<uint8_t>(idx);
  }
  return lut;
}

const uint8_t* dynamic_lut() {
  static const std::unique_ptr<uint8_t[]> lut = build_lut(dynamic_map());
  return lut.get();
}

// norm_to_lut_index. The x86 build compiles `t * 65535 + 0.5f` to one fused multiply-add
// (vfmadd213ss), so std::fma reproduces it; cvttss2si turns NaN into index 0.
inline int lut_index(float v) {
  v = -1.0f > v ? -1.0f : (v > 1.0f ? 1.0f : v);  // std::clamp: NaN passes through
  const float f = std::fma((v + 1.0f) * 0.5f, static_cast<float>(kLutSize - 1), 0.5f);
  if (std::isnan(f)) return 0;
  return static_cast<int>(f) & 0xFFFF;
}

void quantize_block(const float* x, int64_t len, const uint8_t* lut, uint8_t* codes, float* absmax) {
  // std::max(acc, |x|) from -inf, then max with 0: NaN never wins.
  float amax = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < len; ++i) {
    const float a = std::fabs(x[i]);
    amax = amax < a ? a : amax;
  }
  amax = 0.0f > amax ? 0.0f : amax;
  *absmax = amax;
  if (amax == 0.0f) {
    std::fill(codes, codes + len, uint8_t{0});
    return;
  }
  const float inv = 1.0f / amax;
  for (int64_t i = 0; i < len; ++i) codes[i] = lut[lut_index(x[i] * inv)];
}

}  // namespace

namespace detail {

void quantize_blockwise_8bit(const float* x, int64_t n, int64_t blocksize, uint8_t* codes, float* absmax) {
  const uint8_t* lut = dynamic_lut();
  const int64_t blocks = (n + blocksize - 1) / blocksize;
  at::parallel_for(0, blocks, std::max<int64_t>(1, 16384 / blocksize), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t start = b * blocksize, len = std::min(blocksize, n - start);
      quantize_block(x + start, len, lut, codes + start, absmax + b);
    }
  });
}

void dequantize_blockwise_8bit(const uint8_t* codes, int64_t n, int64_t blocksize, const float* code,
                               const float* absmax, float* out) {
  at::parallel_for(0, n, 16384, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) out[i] = code[codes[i]] * absmax[i / blocksize];
  });
}

}  // namespace detail

// bnb's dequantize_4bit for a nested state: dequantize_blockwise(absmax, state2), then
// `absmax += offset`, each rounded to fp32 on its own.
at::Tensor dequantize_absmax(const QuantState4bit& state) {
  validate(state);
  if (!state.nested) return state.absmax.to(at::kCPU).contiguous();
  const at::Tensor codes = state.absmax.to(at::kCPU).contiguous();
  const at::Tensor nested = state.nested_absmax.to(at::kCPU).contiguous();
  const at::Tensor code = state.nested_code.to(at::kCPU).contiguous();
  at::Tensor out = at::empty({codes.numel()}, at::kFloat);
  float* o = out.data_ptr<float>();
  detail::dequantize_blockwise_8bit(codes.data_ptr<uint8_t>(), codes.numel(), state.nested_blocksize,
                                    code.data_ptr<float>(), nested.data_ptr<float>(), o);
  const float offset = state.offset;
  for (int64_t i = 0; i < out.numel(); ++i) o[i] += offset;
  return out;
}

}  // namespace peft::quant
