// 4-bit dequantization: out = code[q] * scale in fp32, rounded once to the output dtype,
// which is bnb's reference arithmetic (backends/default _dequantize_4bit_compute) and
// that of its scalar C++ kernel.
#include <ATen/ATen.h>

#include <stdexcept>

#include "quant/quant_internal.h"
#include "util/parallel_for.h"

namespace peft::quant {
namespace {

// Flat elements [e0, e1) into out[0 .. e1 - e0). Per block, the 16 possible outputs are
// computed once (a LUT already in the output dtype), so the inner loop is two table
// loads and stores per byte. Blocks are independent: parallel over them.
template <typename T>
void dequantize_range(const uint8_t* packed, const float* scales, const float* code, int64_t blocksize,
                      int64_t e0, int64_t e1, T* out) {
  if (e1 <= e0) return;
  const int64_t b_first = e0 / blocksize, b_end = (e1 - 1) / blocksize + 1;
  at::parallel_for(b_first, b_end, std::max<int64_t>(1, 32768 / blocksize), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      T lut[16];
      const float scale = scales[b];
      for (int k = 0; k < 16; ++k) lut[k] = static_cast<T>(code[k] * scale);
      int64_t i = std::max(e0, b * blocksize);
      const int64_t end = std::min(e1, (b + 1) * blocksize);
      T* o = out + (i - e0);
      if (i & 1) *o++ = lut[packed[i++ >> 1] & 0xF];  // a tile starting on a low nibble
      for (; i + 1 < end; i += 2, o += 2) {
        const uint8_t byte = packed[i >> 1];
        o[0] = lut[byte >> 4];
        o[1] = lut[byte & 0xF];
      }
      if (i < end) *o = lut[packed[i >> 1] >> 4];  // ... or ending on a high one
    }
  });
}

void dispatch_range(const at::Tensor& packed, const QuantState4bit& st, const at::Tensor& scales, int64_t e0,
                    int64_t e1, const at::Tensor& out) {
  const uint8_t* p = static_cast<const uint8_t*>(packed.const_data_ptr());
  const float* s = scales.const_data_ptr<float>();
  const float* code = code_table(st.type).data();
  switch (out.scalar_type()) {
    case at::kFloat: return dequantize_range(p, s, code, st.blocksize, e0, e1, out.data_ptr<float>());
    case at::kBFloat16: return dequantize_range(p, s, code, st.blocksize, e0, e1, out.data_ptr<at::BFloat16>());
    case at::kHalf: return dequantize_range(p, s, code, st.blocksize, e0, e1, out.data_ptr<at::Half>());
    default:
      throw std::invalid_argument(std::string("dequantize_4bit: output dtype must be fp32, bf16 or fp16, got ") +
                                  c10::toString(out.scalar_type()));
  }
}

void check_scales(const at::Tensor& scales, const QuantState4bit& st) {
  if (!scales.defined() || scales.scalar_type() != at::kFloat || !scales.device().is_cpu() ||
      !scales.is_contiguous() || scales.numel() != st.blocks()) {
    throw std::invalid_argument("dequantize_4bit_rows: scales must be dequantize_absmax(state): " +
                                std::to_string(st.blocks()) + " contiguous fp32 CPU values");
  }
}

}  // namespace

at::Tensor dequantize_4bit(const at::Tensor& packed, const QuantState4bit& state) {
  return dequantize_4bit(packed, state, state.dtype);
}

at::Tensor dequantize_4bit(const at::Tensor& packed, const QuantState4bit& state, at::ScalarType out_dtype) {
  const at::Tensor p = packed.to(at::kCPU).contiguous();
  check_packed(p, state, "dequantize_4bit");  // validates the state too
  const at::Tensor scales = dequantize_absmax(state);
  at::Tensor out = at::empty(state.shape, at::TensorOptions().dtype(out_dtype));
  dispatch_range(p, state, scales, 0, state.numel(), out);
  return packed.device().is_cpu() ? out : out.to(packed.device());
}

void dequantize_4bit_rows(const at::Tensor& packed, const QuantState4bit& state, const at::Tensor& scales,
                          int64_t row0, int64_t row1, const at::Tensor& out) {
  check_packed(packed, state, "dequantize_4bit_rows");
  if (!packed.device().is_cpu() || !packed.is_contiguous()) {
    throw std::invalid_argument("dequantize_4bit_rows: the packed weight must be contiguous on the CPU");
  }
  check_scales(scales, state);
  const int64_t cols = state.cols();
  if (row0 < 0 || row1 < row0 || row1 > state.rows()) {
    throw std::out_of_range("dequantize_4bit_rows: rows [" + std::to_string(row0) + ", " + std::to_string(row1) +
                            ") outside the weight's " + std::to_string(state.rows()) + " rows");
  }
  if (!out.defined() || !out.device().is_cpu() || !out.is_contiguous() || out.numel() != (row1 - row0) * cols) {
    throw std::invalid_argument("dequantize_4bit_rows: out must be a contiguous CPU tensor of " +
                                std::to_string((row1 - row0) * cols) + " elements");
  }
  dispatch_range(packed, state, scales, row0 * cols, row1 * cols, out);
}

}  // namespace peft::quant
