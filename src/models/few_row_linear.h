// Products of a few rows (decoding) on the CPU, over all intra-op threads.
//
// ATen hands an fp32 product of 1-16 rows to MKL, which runs it on one thread (measured on
// a 2-core Zen 4: the same time on one and two threads, 9-11 ms for one row against an
// 11008 x 4096 weight), so decoding in fp32 used one core. Here the weight's output
// features are split into runs of 64 over the threads, each run one MKL call, in 0.5-0.7x
// the time. Each output element is computed as the whole call computes it: the same bits
// at 1, 2 and 16 rows on the shapes measured, and within 1e-6 relative at row counts where
// MKL picks another kernel for the whole product (5 rows, for one).
#pragma once

#include <ATen/core/Tensor.h>

namespace peft {

// bf16 products (x, W [out, in] and bias all bf16) go to an AVX512-BF16 kernel instead, on
// CPUs that have it and no AMX: see few_row_bf16.h.
//
// x W^T + b for x [..., in] and W [out, in] (`weight_in_out`: W stored [in, out], as GPT-2's
// Conv1D). An undefined tensor where it does not apply: autograd or autocast in play, more
// than kFewRows rows; in fp32 also one intra-op thread or a small weight; other dtypes.
at::Tensor few_row_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                          bool weight_in_out = false);

constexpr int64_t kFewRows = 16;

// Rows up to which bf16 products take the AVX512-BF16 kernel: all of decoding's few rows.
// Measured on Zen 4 (2 threads, against ATen/oneDNN): a 49,152 x 960 head, 1 row 2.6-2.7
// vs 3.7-3.8 ms, 8 rows 4.6 vs 6.4, 16 rows 5.8 vs 8.0; 11,008 x 4,096, 16 rows 5.6 vs 6.4.
constexpr int64_t kFewRowsBf16 = kFewRows;

}  // namespace peft
