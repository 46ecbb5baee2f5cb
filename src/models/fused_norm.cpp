#include "models/fused_norm.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cmath>

namespace peft {
namespace {

template <typename T>
float load(const T* p, int64_t i) {
  return static_cast<float>(p[i]);
}

// out[r] = w * round_T(x[r] * rstd[r]); rstd saved for backward.
template <typename T, typename W, typename O>
void forward_rows(const T* x, const W* w, O* out, float* rstd, int64_t rows, int64_t dim, float eps) {
  at::parallel_for(0, rows, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const T* xr = x + r * dim;
      float ss = 0;
      for (int64_t i = 0; i < dim; ++i) ss += load(xr, i) * load(xr, i);
      const float s = 1.0f / std::sqrt(ss / static_cast<float>(dim) + eps);
      rstd[r] = s;
      O* orow = out + r * dim;
      for (int64_t i = 0; i < dim; ++i)
        orow[i] = static_cast<O>(load(w, i) * static_cast<float>(static_cast<T>(load(xr, i) * s)));
    }
  });
}

// n = x * rstd, gn = g * w:  dx = rstd * (gn - n * mean(gn * n));  dw = sum_r g * n.
template <typename T, typename W, typename G>
void backward_rows(const T* x, const W* w, const G* g, const float* rstd, T* dx, float* dw_partial, int64_t rows,
                   int64_t dim, int64_t chunk) {
  at::parallel_for(0, rows, chunk, [&](int64_t r0, int64_t r1) {
    float* dw = dw_partial ? dw_partial + (r0 / chunk) * dim : nullptr;
    for (int64_t r = r0; r < r1; ++r) {
      const T* xr = x + r * dim;
      const G* gr = g + r * dim;
      const float s = rstd[r];
      float dot = 0;
      for (int64_t i = 0; i < dim; ++i) dot += load(gr, i) * load(w, i) * load(xr, i) * s;
      const float m = dot / static_cast<float>(dim);
      T* dxr = dx + r * dim;
      for (int64_t i = 0; i < dim; ++i) {
        const float n = load(xr, i) * s;
        dxr[i] = static_cast<T>(s * (load(gr, i) * load(w, i) - n * m));
        if (dw) dw[i] += load(gr, i) * n;
      }
    }
  });
}

template <typename F>
void dispatch_float(at::ScalarType t, F&& f) {
  if (t == at::kFloat) f(float{});
  else f(c10::BFloat16{});
}

struct FusedRmsNorm : public torch::autograd::Function<FusedRmsNorm> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            double eps) {
    const int64_t dim = x.size(-1), rows = x.numel() / dim;
    auto out = at::empty(x.sizes(), x.options().dtype(at::promote_types(x.scalar_type(), weight.scalar_type())));
    auto rstd = at::empty({rows}, x.options().dtype(at::kFloat));
    dispatch_float(x.scalar_type(), [&](auto xt) {
      using T = decltype(xt);
      dispatch_float(weight.scalar_type(), [&](auto wt) {
        using W = decltype(wt);
        dispatch_float(out.scalar_type(), [&](auto ot) {
          using O = decltype(ot);
          forward_rows<T, W, O>(x.data_ptr<T>(), weight.data_ptr<W>(), out.data_ptr<O>(), rstd.data_ptr<float>(), rows,
                                dim, static_cast<float>(eps));
        });
      });
    });
    ctx->save_for_backward({x, weight, rstd});
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &weight = saved[1], &rstd = saved[2];
    const at::Tensor g = grad_out[0].contiguous();
    const int64_t dim = x.size(-1), rows = x.numel() / dim;
    const bool want_w = ctx->needs_input_grad(1);
    const int64_t chunk = std::max<int64_t>(16, (rows + at::get_num_threads() - 1) / at::get_num_threads());
    auto dx = at::empty_like(x);
    at::Tensor dw_partial = want_w ? at::zeros({(rows + chunk - 1) / chunk, dim}, x.options().dtype(at::kFloat))
                                   : at::Tensor();
    dispatch_float(x.scalar_type(), [&](auto xt) {
      using T = decltype(xt);
      dispatch_float(weight.scalar_type(), [&](auto wt) {
        using W = decltype(wt);
        dispatch_float(g.scalar_type(), [&](auto gt) {
          using G = decltype(gt);
          backward_rows<T, W, G>(x.data_ptr<T>(), weight.data_ptr<W>(), g.data_ptr<G>(), rstd.data_ptr<float>(),
                                 dx.data_ptr<T>(), want_w ? dw_partial.data_ptr<float>() : nullptr, rows, dim, chunk);
        });
      });
    });
    at::Tensor dw = want_w ? dw_partial.sum(0).to(weight.scalar_type()) : at::Tensor();
    return {dx, dw, at::Tensor()};
  }
};

bool fusable(const at::Tensor& x, const at::Tensor& weight) {
  auto ok = [](at::ScalarType t) { return t == at::kFloat || t == at::kBFloat16; };
  return x.device().is_cpu() && weight.device().is_cpu() && x.is_contiguous() && weight.is_contiguous() &&
         weight.dim() == 1 && x.dim() >= 1 && x.size(-1) == weight.size(0) && x.numel() > 0 && ok(x.scalar_type()) &&
         ok(weight.scalar_type());
}

}  // namespace

at::Tensor rms_norm_reference(const at::Tensor& x, const at::Tensor& weight, double eps) {
  auto h = x.to(at::kFloat);
  auto var = h.pow(2).mean(-1, /*keepdim=*/true);
  h = h * at::rsqrt(var + eps);
  return weight * h.to(x.scalar_type());
}

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  if (!fusable(x, weight)) return rms_norm_reference(x, weight, eps);
  return FusedRmsNorm::apply(x, weight, eps);
}

}  // namespace peft
