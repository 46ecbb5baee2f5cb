#include "models/fused_ops.h"

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <stdexcept>
#include <string>

#include "models/fused_kernels.h"
#include "util/parallel_for.h"

namespace peft::fused {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
namespace k = fused_kernels;

k::bf16_bits* bits(const at::Tensor& t) { return reinterpret_cast<k::bf16_bits*>(t.data_ptr<at::BFloat16>()); }

// Rows per task: enough work (~32k values) that a thread's share outweighs waking it.
int64_t grain(int64_t row_width) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, row_width)); }

struct RmsNormBf16 : public torch::autograd::Function<RmsNormBf16> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight, double eps) {
    const int64_t n = x.size(-1), rows = x.numel() / std::max<int64_t>(1, n);
    auto xc = x.contiguous();
    auto w = weight.to(at::kFloat).contiguous();
    auto y = at::empty(x.sizes(), x.options().dtype(at::kBFloat16));
    auto rstd = at::empty({rows}, x.options());
    const float* xp = xc.data_ptr<float>();
    const float* wp = w.data_ptr<float>();
    float* rp = rstd.data_ptr<float>();
    k::bf16_bits* yp = bits(y);
    at::parallel_for(0, rows, grain(n), [&](int64_t b, int64_t e) {
      k::rms_norm_forward(xp + b * n, wp, yp + b * n, rp + b, e - b, n, static_cast<float>(eps));
    });
    ctx->save_for_backward({xc, w, rstd});
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &w = saved[1], &rstd = saved[2];
    auto g = grad_out[0].to(at::kBFloat16).contiguous();
    const int64_t n = x.size(-1), rows = x.numel() / std::max<int64_t>(1, n);
    auto dx = at::empty_like(x);
    const float* xp = x.data_ptr<float>();
    const float* wp = w.data_ptr<float>();
    const float* rp = rstd.data_ptr<float>();
    const k::bf16_bits* gp = bits(g);
    float* dp = dx.data_ptr<float>();
    at::parallel_for(0, rows, grain(n), [&](int64_t b, int64_t e) {
      k::rms_norm_backward(gp + b * n, xp + b * n, wp, rp + b, dp + b * n, e - b, n);
    });
    return {dx, at::Tensor(), at::Tensor()};
  }
};

// x as [b, s, heads, d] contiguous (a free view when x is a linear's output split into
// heads), the kernel's layout.
at::Tensor seq_major(const at::Tensor& x) { return x.transpose(1, 2).to(at::kBFloat16).contiguous(); }

// Runs the rotary kernel over every (batch, position) row of x [b, s, heads, d].
at::Tensor rope_pass(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, bool backward) {
  const int64_t b = x.size(0), s = x.size(1), heads = x.size(2), d = x.size(3);
  const bool shared = cos.size(0) == 1;  // one set of positions for the whole batch
  auto y = at::empty_like(x);
  const k::bf16_bits* xp = bits(x);
  k::bf16_bits* yp = bits(y);
  const float* cp = cos.data_ptr<float>();
  const float* sp = sin.data_ptr<float>();
  at::parallel_for(0, b * s, grain(heads * d), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t angle_row = shared ? r % s : r;
      k::rope_rows(xp + r * heads * d, cp + angle_row * d, sp + angle_row * d, yp + r * heads * d, heads, d, backward);
    }
  });
  return y;
}

struct RopeBf16 : public torch::autograd::Function<RopeBf16> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
    ctx->save_for_backward({cos, sin});
    return rope_pass(seq_major(x), cos, sin, /*backward=*/false).transpose(1, 2);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    auto saved = ctx->get_saved_variables();
    auto dx = rope_pass(seq_major(grad_out[0]), saved[0], saved[1], /*backward=*/true).transpose(1, 2);
    return {dx, at::Tensor(), at::Tensor()};
  }
};

struct SiluMulBf16 : public torch::autograd::Function<SiluMulBf16> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& g, const at::Tensor& u) {
    auto gc = g.contiguous(), uc = u.contiguous();
    auto y = at::empty(g.sizes(), g.options());
    const k::bf16_bits *gp = bits(gc), *up = bits(uc);
    k::bf16_bits* yp = bits(y);
    at::parallel_for(0, y.numel(), 32768, [&](int64_t b, int64_t e) {
      k::silu_mul_forward(gp + b, up + b, yp + b, e - b);
    });
    ctx->save_for_backward({gc, uc});
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    auto saved = ctx->get_saved_variables();
    const auto &g = saved[0], &u = saved[1];
    auto dy = grad_out[0].to(at::kBFloat16).contiguous();
    auto dg = at::empty_like(g), du = at::empty_like(u);
    const k::bf16_bits *dyp = bits(dy), *gp = bits(g), *up = bits(u);
    k::bf16_bits *dgp = bits(dg), *dup = bits(du);
    at::parallel_for(0, g.numel(), 32768, [&](int64_t b, int64_t e) {
      k::silu_mul_backward(dyp + b, gp + b, up + b, dgp + b, dup + b, e - b);
    });
    return {dg, du};
  }
};

// cos/sin [b or 1, 1, s, d] as fp32 [b or 1, s, d] rows.
at::Tensor angle_rows(const at::Tensor& a) { return a.squeeze(1).to(at::kFloat).contiguous(); }

}  // namespace

bool bf16_autocast_cpu(const at::Tensor& x) {
  return x.device().is_cpu() && at::autocast::is_autocast_enabled(at::kCPU) &&
         at::autocast::get_autocast_dtype(at::kCPU) == at::kBFloat16;
}

at::Tensor rms_norm_bf16(const at::Tensor& x, const at::Tensor& weight, double eps) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && weight.dim() == 1 && weight.size(0) == x.size(-1),
              "rms_norm_bf16: x must be fp32 [..., n] and weight [n]");
  return RmsNormBf16::apply(x, weight.detach(), eps);
}

at::Tensor rope_bf16(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  TORCH_CHECK(x.dim() == 4 && x.size(-1) % 2 == 0 && cos.dim() == 4 && cos.size(1) == 1 && cos.size(-1) == x.size(-1) &&
                  cos.size(2) == x.size(2) && (cos.size(0) == 1 || cos.size(0) == x.size(0)) && sin.sizes() == cos.sizes(),
              "rope_bf16: x must be [b, heads, s, d] and cos/sin [b or 1, 1, s, d]");
  return RopeBf16::apply(x, angle_rows(cos), angle_rows(sin));
}

at::Tensor silu_mul_bf16(const at::Tensor& g, const at::Tensor& u) {
  TORCH_CHECK(g.scalar_type() == at::kBFloat16 && u.scalar_type() == at::kBFloat16 && g.sizes() == u.sizes(),
              "silu_mul_bf16: g and u must be bf16 tensors of one shape");
  return SiluMulBf16::apply(g, u);
}

at::Tensor cross_entropy_bf16_(at::Tensor& logits, const at::Tensor& targets, bool want_grad) {
  TORCH_CHECK(logits.scalar_type() == at::kBFloat16 && logits.dim() == 2 && logits.is_contiguous() &&
                  targets.dim() == 1 && targets.size(0) == logits.size(0),
              "cross_entropy_bf16_: logits must be contiguous bf16 [rows, vocab] and targets [rows]");
  const int64_t rows = logits.size(0), v = logits.size(1);
  auto t = targets.to(at::kLong).contiguous();
  if (rows > 0 && (t.min().item<int64_t>() < 0 || t.max().item<int64_t>() >= v))
    throw std::out_of_range("a label id is outside the vocabulary of " + std::to_string(v));
  auto loss = at::empty({rows}, logits.options().dtype(at::kFloat));
  const int64_t* tp = t.data_ptr<int64_t>();
  float* lp = loss.data_ptr<float>();
  k::bf16_bits* xp = bits(logits);
  at::parallel_for(0, rows, grain(v), [&](int64_t b, int64_t e) {
    k::cross_entropy_rows(xp + b * v, tp + b, lp + b, e - b, v, want_grad);
  });
  return loss;
}

at::Tensor rms_norm_aten(const at::Tensor& x, const at::Tensor& weight, double eps) {
  auto h = x.to(at::kFloat);
  auto var = h.pow(2).mean(-1, /*keepdim=*/true);
  h = h * at::rsqrt(var + eps);
  return weight * h.to(x.scalar_type());
}

at::Tensor rope_aten(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t h = x.size(-1) / 2;
  auto rotated = at::cat({-x.narrow(-1, h, h), x.narrow(-1, 0, h)}, -1);
  return x * cos + rotated * sin;
}

at::Tensor silu_mul_aten(const at::Tensor& g, const at::Tensor& u) { return at::silu(g) * u; }

}  // namespace peft::fused
