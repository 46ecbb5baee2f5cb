// bf16 products of a few rows (decoding in bf16) with AVX512-BF16 dot products.
//
// ATen hands a bf16 product of 1-16 rows to oneDNN, which on an AVX-512 BF16 host without
// AMX streams the weight at a fraction of memory speed (Zen 4, 2 threads: a 49,152 x 960
// head, SmolLM2's tied embedding, takes 3.5-4.1 ms for one row, 23-27 GB/s, and 5.3 ms
// for 4). Here each weight load serves up to 4 rows and each x load 4 features, 32
// products per instruction, the accumulators in registers, and 4 weight rows meet every
// row of x while they are in cache.
// Internal to few_row_linear.
#pragma once

#include <ATen/core/Tensor.h>

namespace peft {

// Whether the CPU has the instructions (AVX512-BF16) and no AMX (where oneDNN's own
// kernels have not been measured against this one).
bool few_row_bf16_supported();

// x2d [rows, in] W^T + b in bf16: x2d and W [out, in] contiguous bf16, b bf16 [out] or
// undefined. Each output element is one fp32 sum of exact bf16 products, plus the bias,
// rounded to bf16 once (as oneDNN rounds its fp32 accumulator), in another order.
at::Tensor few_row_linear_bf16(const at::Tensor& x2d, const at::Tensor& weight, const at::Tensor& bias);

}  // namespace peft
