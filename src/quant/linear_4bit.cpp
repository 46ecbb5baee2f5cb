#include "quant/linear_4bit.h"

#include <ATen/ATen.h>
#include <ATen/core/ivalue.h>
#include <torch/csrc/autograd/custom_function.h>

namespace peft::quant {

Weight4bit::Weight4bit(QuantState4bit s, at::ScalarType compute)
    : state(std::move(s)), scales(dequantize_absmax(state)), compute_dtype(compute) {
  if (state.shape.size() != 2)
    throw std::runtime_error("4-bit linear weight: shape must be [out, in], got " +
                             std::to_string(state.shape.size()) + " dimensions");
}

at::Tensor dequantize_weight(const at::Tensor& packed, const Weight4bit& w, at::ScalarType dtype) {
  auto out = at::empty({w.out_features(), w.in_features()}, at::TensorOptions().dtype(dtype));
  const at::Tensor cpu_packed = packed.device().is_cpu() ? packed : packed.cpu();
  dequantize_4bit_rows(cpu_packed, w.state, w.scales, 0, w.out_features(), out);
  return packed.device().is_cpu() ? out : out.to(packed.device());
}

namespace {

// Keeps the layer's 4-bit state alive for as long as the graph that needs it.
struct StateRef : torch::CustomClassHolder {
  std::shared_ptr<const Weight4bit> w;
};

// Saves nothing of size: backward dequantizes the weight again rather than keeping a
// full-precision copy alive between forward and backward.
struct Linear4bitFunction : public torch::autograd::Function<Linear4bitFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& bias,
                            const at::Tensor& packed, c10::intrusive_ptr<StateRef> ref) {
    const Weight4bit* w = ref->w.get();
    ctx->saved_data["packed"] = packed;
    ctx->saved_data["w"] = c10::IValue::make_capsule(ref);
    // No bias arrives as an empty tensor (apply() needs every tensor argument defined).
    const bool has_bias = bias.numel() > 0;
    ctx->saved_data["bias"] = has_bias;
    const at::Tensor wd = dequantize_weight(packed, *w, x.scalar_type());
    return at::linear(x, wd, has_bias ? bias.to(x.scalar_type()) : at::Tensor());
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    auto ref = c10::static_intrusive_pointer_cast<StateRef>(ctx->saved_data["w"].toCapsule());
    const Weight4bit* w = ref->w.get();
    const at::Tensor& g = grad_out[0];
    const at::Tensor wd = dequantize_weight(ctx->saved_data["packed"].toTensor(), *w, g.scalar_type());
    at::Tensor grad_x = at::matmul(g, wd);
    at::Tensor grad_b;
    if (ctx->saved_data["bias"].toBool()) grad_b = g.reshape({-1, g.size(-1)}).sum(0);
    return {grad_x, grad_b, at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor linear_4bit(const at::Tensor& x, const at::Tensor& packed, const std::shared_ptr<const Weight4bit>& state,
                       const at::Tensor& bias) {
  const Weight4bit& w = *state;
  if (x.size(-1) != w.in_features())
    throw std::invalid_argument("4-bit linear: input has " + std::to_string(x.size(-1)) + " features, the weight " +
                                std::to_string(w.in_features()));
  const at::ScalarType in_dtype = x.scalar_type();
  const at::Tensor xc = x.to(w.compute_dtype);
  const at::Tensor b = bias.defined() ? bias.to(w.compute_dtype) : bias;
  at::Tensor y;
  if (at::GradMode::is_enabled() && (xc.requires_grad() || (b.defined() && b.requires_grad()))) {
    auto ref = c10::make_intrusive<StateRef>();
    ref->w = state;
    y = Linear4bitFunction::apply(xc, b.defined() ? b : at::empty({0}, xc.options()), packed, ref);
  } else {
    y = at::linear(xc, dequantize_weight(packed, w, w.compute_dtype), b);
  }
  return y.to(in_dtype);
}

}  // namespace peft::quant
