// A frozen linear layer on a 4-bit weight (QLoRA's base, bitsandbytes' Linear4bit).
//
// The packed codes stay the only copy of the weight. A forward dequantizes the layer's
// weight into the compute dtype just for its own matrix product (never the whole model at
// once), and backward dequantizes it again to reach the input: the weight gets no
// gradient, so adapters on top (LoRA, DoRA, (IA)3, ...) train through it.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <mutex>

#include "quant/quant_4bit.h"

namespace peft::quant {

// What a 4-bit layer keeps beside its packed codes.
struct Weight4bit {
  QuantState4bit state;                        // shape [out, in]
  at::Tensor scales;                           // dequantize_absmax(state), once
  at::ScalarType compute_dtype = at::kFloat;   // bnb_4bit_compute_dtype

  Weight4bit(QuantState4bit s, at::ScalarType compute);
  int64_t out_features() const { return state.rows(); }
  int64_t in_features() const { return state.cols(); }

  // `scales` on `device`, copied there once: moving a model to a GPU moves its packed
  // codes (a buffer) but not this state.
  at::Tensor scales_on(const at::Device& device) const;

 private:
  mutable std::mutex device_scales_mutex_;
  mutable at::Tensor device_scales_;
};

// y = x W^T + b as bnb's Linear4bit computes it: x cast to the compute dtype, W
// dequantized to it, the product cast back to x's dtype. Differentiable in x and b.
at::Tensor linear_4bit(const at::Tensor& x, const at::Tensor& packed, const std::shared_ptr<const Weight4bit>& w,
                       const at::Tensor& bias);

// The dtype a 4-bit product on the host computes in for `wanted` (the compute dtype, or
// autocast's): bf16 becomes fp32 where bf16 products are not wanted on this CPU
// (cpu_bf16_matmul_wanted: without AVX-512 they take LibTorch's reference GEMM, ~100x
// slower than fp32), fp16 where fp16 products are slow (cpu_has_fast_fp16_matmul: without
// AVX512-FP16, 4x slower than fp32 or worse). bnb checkpoints are saved with
// bnb_4bit_compute_dtype bfloat16 or float16, GPU settings, which on such a CPU would
// prefill a prompt at a fraction of the fp32 rate for no gain.
at::ScalarType host_compute_dtype(at::ScalarType wanted, bool bf16_wanted, bool fp16_fast);

// The whole weight [out, in] in `dtype`.
at::Tensor dequantize_weight(const at::Tensor& packed, const Weight4bit& w, at::ScalarType dtype);

}  // namespace peft::quant
