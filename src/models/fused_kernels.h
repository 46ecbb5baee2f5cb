#pragma once
// Row kernels behind models/fused_ops.h: plain loops over raw buffers, one pass each, with
// an AVX-512 (BF16) body chosen at run time and a portable scalar body otherwise. They do
// no threading and no checks; the callers split rows across threads and own the shapes.

#include <cstdint>

namespace peft::fused_kernels {

using bf16_bits = uint16_t;  // bf16 values as stored: the high half of an fp32

// y = bf16(w * x * rstd), rstd = 1 / sqrt(mean(x^2) + eps), for `rows` rows of width n.
void rms_norm_forward(const float* x, const float* w, bf16_bits* y, float* rstd, int64_t rows, int64_t n,
                      float eps);
// dx = rstd * (g w) - x rstd^3 mean((g w) x), the input gradient of the above.
void rms_norm_backward(const bf16_bits* g, const float* x, const float* w, const float* rstd, float* dx,
                       int64_t rows, int64_t n);

// Rotary embedding of `heads` vectors of width d sharing one row of cos/sin:
//   forward  y[i] = x[i] cos[i] - x[i+h] sin[i],    y[i+h] = x[i+h] cos[i+h] + x[i] sin[i+h]
//   backward y[i] = x[i] cos[i] + x[i+h] sin[i+h],  y[i+h] = x[i+h] cos[i+h] - x[i] sin[i]
// (h = d / 2; the backward is the transpose, x then being the output's gradient).
void rope_rows(const bf16_bits* x, const float* cos, const float* sin, bf16_bits* y, int64_t heads, int64_t d,
               bool backward);

// SwiGLU's product y = silu(g) * u over n values, and its gradients
//   dg = dy * u * s (1 + g (1 - s)),  du = dy * silu(g),  s = sigmoid(g).
void silu_mul_forward(const bf16_bits* g, const bf16_bits* u, bf16_bits* y, int64_t n);
void silu_mul_backward(const bf16_bits* dy, const bf16_bits* g, const bf16_bits* u, bf16_bits* dg, bf16_bits* du,
                       int64_t n);

// Cross-entropy over `rows` rows of v bf16 logits: loss[r] = logsumexp(x_r) - x_r[target_r].
// With want_grad each row is overwritten, in place, by its gradient softmax(x_r) -
// onehot(target_r), in bf16. Targets must lie in [0, v).
void cross_entropy_rows(bf16_bits* logits, const int64_t* targets, float* loss, int64_t rows, int64_t v,
                        bool want_grad);

// Which body runs here ("avx512bf16" or "scalar"); tests force the scalar one to cover it.
const char* kernel_isa();
void force_scalar_kernels(bool on);

}  // namespace peft::fused_kernels
