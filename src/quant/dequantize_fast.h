// The dequantization a 4-bit layer runs at every forward and backward: whole rows of a
// weight whose rows are whole blocks, vectorized (AVX-512, else AVX2) where the CPU has it. Values
// are bit-identical to dequantize_4bit's (code * scale in fp32, rounded once, NaN as
// c10 rounds it); layouts it does not cover go to dequantize_4bit_rows.
#pragma once

#include <ATen/core/Tensor.h>

#include "quant/quant_4bit.h"

namespace peft::quant {

// The loop that runs: the widest the CPU has, or at most AVX2, or the portable one (the
// tests compare them on one machine; a body the CPU lacks falls back to the next).
enum class DequantBody { kBest, kAvx2, kPortable };

// Writes the whole weight into `out` (contiguous CPU [rows, cols], fp32 or bf16).
void dequantize_rows_fast(const at::Tensor& packed, const QuantState4bit& state, const at::Tensor& scales,
                          const at::Tensor& out, DequantBody body = DequantBody::kBest);

// The tile rows [r0, r1) x columns [c0, c1) of the weight seen as [rows, cols], into `out`
// (contiguous [r1 - r0, c1 - c0], fp32 or bf16). Column bounds on block boundaries take
// the fast path; others work, more slowly.
void dequantize_tile(const at::Tensor& packed, const QuantState4bit& state, const at::Tensor& scales, int64_t r0,
                     int64_t r1, int64_t c0, int64_t c1, const at::Tensor& out,
                     DequantBody body = DequantBody::kBest);

}  // namespace peft::quant
