// Decoding on a 4-bit weight: y = x W^T for a few rows of x, reading the packed codes
// once and never writing a dequantized weight. Decode is bound by the bytes of weight it
// streams, so this is where 4-bit pays: half a byte per parameter instead of two.
#pragma once

#include <ATen/core/Tensor.h>

#include "quant/linear_4bit.h"

namespace peft::quant {

// Rows of x up to which the fused kernel is used (beyond, dequantize + GEMM is faster).
constexpr int64_t kGemvMaxRows = 8;
// Up to this many where the tiled kernels run (each weight row dequantized once for every 4
// rows of x, in registers): bf16 compute on a CPU with AVX512-BF16 but no AMX, and fp32
// compute on an AVX-512 CPU (also bf16 compute on one without AVX512-BF16). There a GEMM of
// a few dozen rows gets a small part of the peak, after a dequantization that writes and
// reads the whole weight. Measured on an AMD EPYC (Zen 4), 11008 x 4096, fused against
// dequantize + GEMM: bf16 24 rows 6.7 vs 12.2 ms, 32 rows 8.7 vs 11.8, 64 rows 17.2 vs
// 18.5; fp32 16 rows 7.6 vs 14.0, 32 rows 14.5 vs 20.6, 64 rows 29.4 vs 36.5. AMX hosts
// keep kGemvMaxRows for bf16 compute until measured (their bf16 GEMM is several times
// faster); fp32 products do not use AMX.
constexpr int64_t kGemvMaxRowsTiled = 64;

// The most rows of x gemv_4bit_applies accepts for `w` on this CPU.
int64_t gemv_4bit_max_rows(const Weight4bit& w);

// True where gemv_4bit can compute x [rows, in] against `w` (a CPU weight whose rows are
// whole blocks, blocks of a multiple of 32 elements, rows <= gemv_4bit_max_rows(w)).
bool gemv_4bit_applies(const at::Tensor& x2d, const at::Tensor& packed, const Weight4bit& w);

// [rows, out] fp32: sum_i x[r, i] * code[q(o, i)] * scale(o, i). With an fp32 compute
// dtype, fp32 throughout: on AVX-512 from 2 rows on, the weights are the fp32
// dequantization's own (code * scale), so only the summation order differs from
// dequantize-then-multiply; one row, and the AVX2 and portable bodies, scale each block's
// partial sum once (about one fp32 ulp per block from it, far below the 4-bit error).
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
