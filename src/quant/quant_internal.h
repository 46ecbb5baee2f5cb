// Shared between the 4-bit quantization sources (src/quant/*.cpp); not part of the API.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "quant/quant_4bit.h"

namespace peft::quant::detail {

// How bnb's portable quantize_4bit picks a code: torch.bucketize of the scaled value
// against the 15 midpoints of the sorted code values, then (FP4, whose table is not
// sorted) the bucket mapped back to its code index through argsort.
struct Buckets {
  std::array<float, 15> bounds;        // (sorted[k] + sorted[k + 1]) / 2 in fp32, ascending
  std::array<uint8_t, 16> code_index;  // bucket -> 4-bit code (identity for NF4)
  uint8_t zero_code;                   // the code of 0.0, which pads an odd element count
};
const Buckets& buckets(QuantType type);

// libbitsandbytes_cpu's 8-bit blockwise quantizer (x86 build), which double quantization
// runs on the fp32 absmax: for each block of `blocksize` values, absmax = max |x| (NaN
// ignored), codes = lut[index(x / absmax)] with bnb's 65536-entry nearest-code table.
// An all-zero block gets codes 0.
void quantize_blockwise_8bit(const float* x, int64_t n, int64_t blocksize, uint8_t* codes,
                             float* absmax);
// out[i] = code[codes[i]] * absmax[i / blocksize], in fp32, as bnb computes it.
void dequantize_blockwise_8bit(const uint8_t* codes, int64_t n, int64_t blocksize,
                               const float* code, const float* absmax, float* out);

// "float32" / "bfloat16" / "float16" (str(torch dtype) without "torch."); throws for others.
std::string dtype_name(at::ScalarType dtype);
bool supported_dtype(at::ScalarType dtype);

}  // namespace peft::quant::detail
