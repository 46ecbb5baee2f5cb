// LoftQ (Li et al. 2023): LoRA factors that absorb the quantization error of the base
// weight, as HF PEFT's loftq_init computes them for 4-bit NF4 (bitsandbytes, blocksize 64).
#pragma once

#include <ATen/core/Tensor.h>

namespace peft {

struct LoftqFactors {
  at::Tensor dequantized;  // the base weight NF4-quantized and back: W's replacement
  at::Tensor lora_A;       // [r, in]
  at::Tensor lora_B;       // [out, r]
};

// Alternates `iters` times: Q = dequant(nf4(W - B A)) (first: of W), then B, A = the
// rank-r SVD of W - Q (B = U sqrt(S), A = sqrt(S) Vh). `weight`: float32 [out, in].
LoftqFactors loftq_decompose(const at::Tensor& weight, int64_t rank, int64_t iters);

}  // namespace peft
