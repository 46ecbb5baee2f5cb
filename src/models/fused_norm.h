// RMSNorm as transformers' LlamaRMSNorm computes it, in one pass forward and one backward:
//   h = x.float(); h = h * rsqrt(mean(h^2) + eps); out = weight * h.to(x.dtype)
// The ATen composition takes about ten passes and as many allocations per call, which on
// CPU costs more than the arithmetic (a LLaMA block has two norms, each in every step's
// forward, backward and recompute).
#pragma once

#include <ATen/core/Tensor.h>

namespace peft {

// Fused on CPU for contiguous fp32/bf16 x and an fp32/bf16 weight of x's last size; the
// ATen composition elsewhere. Gradients reach x and, where it requires grad, weight.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);

// The ATen composition itself (the reference the fused kernel is tested against).
at::Tensor rms_norm_reference(const at::Tensor& x, const at::Tensor& weight, double eps);

}  // namespace peft
