#pragma once
// Fused forms of the small ops around a decoder's matrix products, for bf16 autocast on
// CPU. Each reads its input once and writes bf16 directly: the dtype autocast would cast
// to for the next product anyway, so the values are those of the unfused op then cast.
// On 512-token steps these ops cost as much as the products; unfused, each is several
// full passes over fp32 tensors forward and again backward.

#include <ATen/core/Tensor.h>

namespace peft::fused {

// True where the fused ops below apply to x: CPU autocast to bf16 is on.
bool bf16_autocast_cpu(const at::Tensor& x);

// RMSNorm, w * x / sqrt(mean(x^2) + eps), rounded once to bf16. x: fp32 [..., n], weight:
// [n], any float dtype, not trained (no weight gradient is computed). Differentiable in x.
at::Tensor rms_norm_bf16(const at::Tensor& x, const at::Tensor& weight, double eps);

// Rotary embedding x * cos + rotate_half(x) * sin, rounded to bf16. x: bf16 [b, heads, s,
// d], any strides that view a [b, s, heads, d] buffer (a linear's output split into heads)
// or contiguous; cos, sin: fp32 [b or 1, 1, s, d]. Differentiable in x. The result has x's
// layout.
at::Tensor rope_bf16(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

// SwiGLU's product silu(g) * u, rounded once to bf16. g, u: bf16, same shape.
// Differentiable in both; keeps g and u for backward, not silu(g).
at::Tensor silu_mul_bf16(const at::Tensor& g, const at::Tensor& u);

// Per-row cross-entropy of bf16 logits [rows, vocab] (contiguous) against int64 targets
// [rows] in [0, vocab): returns the fp32 losses [rows]; with want_grad, overwrites the
// logits with their gradient softmax - onehot (bf16). Not differentiable itself: the
// fused linear cross-entropy (train/lm_loss.cpp) calls it inside its own forward.
at::Tensor cross_entropy_bf16_(at::Tensor& logits, const at::Tensor& targets, bool want_grad);

// The same ops as ATen compositions, op for op as transformers (any dtype, any device;
// weight gradients too): the models' path everywhere the fused ops don't apply, and what
// the fused ops are tested against (then cast to bf16).
at::Tensor rms_norm_aten(const at::Tensor& x, const at::Tensor& weight, double eps);
at::Tensor rope_aten(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);
at::Tensor silu_mul_aten(const at::Tensor& g, const at::Tensor& u);

}  // namespace peft::fused
