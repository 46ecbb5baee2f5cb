// Decoding on a 4-bit weight: y = x W^T for a few rows of x, reading the packed codes
// once and never writing a dequantized weight. Decode is bound by the bytes of weight it
// streams, so this is where 4-bit pays: half a byte per parameter instead of two.
#pragma once

#include <ATen/core/Tensor.h>

#include "quant/linear_4bit.h"

namespace peft::quant {

// Rows of x up to which the fused kernel is used (beyond, dequantize + GEMM is faster).
constexpr int64_t kGemvMaxRows = 8;
// With bf16 compute on a CPU with AVX512-BF16 but no AMX, up to this many: there a bf16
// GEMM of a few dozen rows gets a small part of the bf16 peak, after a dequantization that
// writes and reads 2 bytes per parameter, while the fused kernel dequantizes each weight
// row once for every 4 rows of x, in registers. Measured on an AMD EPYC (Zen 4), 11008 x
// 4096, fused against dequantize + GEMM: 24 rows 6.7 vs 12.2 ms, 32 rows 8.7 vs 11.8, 48
// rows 13.0 vs 15.1, 64 rows 17.2 vs 18.5. AMX hosts keep kGemvMaxRows until measured.
constexpr int64_t kGemvMaxRowsBf16 = 64;

// The most rows of x gemv_4bit_applies accepts for `w` on this CPU.
int64_t gemv_4bit_max_rows(const Weight4bit& w);

// True where gemv_4bit can compute x [rows, in] against `w` (a CPU weight whose rows are
// whole blocks, blocks of a multiple of 32 elements, rows <= gemv_4bit_max_rows(w)).
bool gemv_4bit_applies(const at::Tensor& x2d, const at::Tensor& packed, const Weight4bit& w);

// [rows, out] fp32: sum_i x[r, i] * code[q(o, i)] * scale(o, i). With an fp32 compute
// dtype, fp32 throughout, each block's partial sum scaled once (the rounding differs from
// dequantize-then-multiply by about one fp32 ulp per block, far below the 4-bit error).
// With bf16 compute on a CPU with AVX512-BF16, x is bf16 and products accumulate in fp32:
// from 2 rows on, the weights are bnb's bf16 dequantization, bf16(code * scale), exactly;
// a single row (decode at batch 1, bound by memory) looks up bf16 codes and scales each
// block's sum in fp32, which differs from that by the weight's bf16 rounding.
// `kernel`: kBest takes the fastest this CPU runs (bf16, AVX-512, AVX2, portable); the
// others force the fp32 AVX2 body (portable where the CPU lacks AVX2) or the portable
// loop, so the tests compare them all on one machine.
enum class GemvKernel { kBest, kAvx2, kPortable };
at::Tensor gemv_4bit(const at::Tensor& x2d, const at::Tensor& packed, const Weight4bit& w,
                     GemvKernel kernel = GemvKernel::kBest);

}  // namespace peft::quant
