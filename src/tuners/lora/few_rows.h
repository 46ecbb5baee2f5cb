// An unmerged LoRA's term for a few rows (decoding), in one pass instead of six ATen calls.
//
// At decode, x A^T and (x A^T) B^T are products of 1-16 rows against r x in and out x r
// matrices: microseconds of arithmetic, but each ATen call (cast, two linears, scale, cast,
// add) costs its dispatch and MKL's set-up, 12-18 us a target in all. With LoRA on q, k, v
// and o of an 8-layer SmolLM2 shape that was 17% of a 4-bit decode step.
#pragma once

#include <ATen/core/Tensor.h>

namespace peft {

// Rows up to which lora_few_rows applies.
constexpr int64_t kLoraFewRows = 16;

// out + ((x A^T) B^T + b) * scaling in out's dtype, rounded once as HF PEFT rounds it (its
// `result + lora * scaling` promotes a bf16 result to fp32 before the cast back). x
// [..., in] fp32 or bf16, A [r, in] and B [out, r] fp32, b fp32 [out] or undefined, out
// [..., out] fp32 or bf16. Sums are fp32 in another order than MKL's. Undefined where it
// does not apply: more than kLoraFewRows rows, a gradient wanted, autocast, other dtypes
// or devices, non-contiguous operands.
// `body`: kBest runs the widest copy this CPU has (AVX-512, AVX2, portable); the others
// force the AVX2 copy (portable where the CPU lacks AVX2) or the portable one, so the tests
// check all three on one machine.
enum class LoraFewRowsBody { kBest, kAvx2, kPortable };
at::Tensor lora_few_rows(const at::Tensor& x, const at::Tensor& a, const at::Tensor& b, const at::Tensor& bias,
                         double scaling, const at::Tensor& out, LoraFewRowsBody body = LoraFewRowsBody::kBest);

}  // namespace peft
