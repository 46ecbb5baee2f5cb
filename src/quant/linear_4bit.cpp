#include "quant/linear_4bit.h"

#include "quant/cuda_4bit.h"
#include "quant/dequantize_fast.h"
#include "quant/gemv_4bit.h"

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <ATen/core/ivalue.h>
#include <torch/csrc/autograd/custom_function.h>

#include <atomic>
#include <iostream>

#include "util/cpu_features.h"

namespace peft::quant {

Weight4bit::Weight4bit(QuantState4bit s, at::ScalarType compute)
    : state(std::move(s)), scales(dequantize_absmax(state)), compute_dtype(compute) {
  if (state.shape.size() != 2)
    throw std::runtime_error("4-bit linear weight: shape must be [out, in], got " +
                             std::to_string(state.shape.size()) + " dimensions");
}

at::Tensor Weight4bit::scales_on(const at::Device& device) const {
  if (device.is_cpu()) return scales;
  const std::lock_guard<std::mutex> lock(device_scales_mutex_);
  if (!device_scales_.defined() || device_scales_.device() != device) device_scales_ = scales.to(device);
  return device_scales_;
}

at::Tensor dequantize_weight(const at::Tensor& packed, const Weight4bit& w, at::ScalarType dtype) {
  if (packed.is_cuda() && load_cuda_4bit_kernels().empty()) return dequantize_weight_cuda(packed, w, dtype);
  auto out = at::empty({w.out_features(), w.in_features()}, at::TensorOptions().dtype(dtype));
  const at::Tensor cpu_packed = packed.device().is_cpu() ? packed : packed.cpu();
  dequantize_rows_fast(cpu_packed, w.state, w.scales, out);
  return packed.device().is_cpu() ? out : out.to(packed.device());
}

at::ScalarType host_compute_dtype(at::ScalarType wanted, bool bf16_wanted, bool fp16_fast) {
  if (wanted == at::kBFloat16 && !bf16_wanted) return at::kFloat;
  if (wanted == at::kHalf && !fp16_fast) return at::kFloat;
  return wanted;
}

namespace {

// host_compute_dtype for this CPU, saying once when it differs from what was asked.
at::ScalarType compute_dtype_here(at::ScalarType wanted) {
  const at::ScalarType dtype = host_compute_dtype(wanted, cpu_bf16_matmul_wanted(), cpu_has_fast_fp16_matmul());
  static std::atomic<bool> told{false};
  if (dtype != wanted && !told.exchange(true))
    std::cerr << (wanted == at::kHalf
                      ? "4-bit layers: this CPU has no AVX512-FP16, so LibTorch's fp16 matrix products would run "
                        "at a fraction of the fp32 rate; computing in fp32 instead\n"
                      : "4-bit layers: this CPU has no AVX-512, so LibTorch's bf16 matrix products would take its "
                        "reference path (about 100x slower than fp32 here); computing in fp32 instead\n");
  return dtype;
}

// Dequantized tiles of about this many bytes: a bounded transient (not a layer-sized
// allocation per call), yet large enough that each GEMM stays efficient (measured: 2 MiB
// tiles made oneDNN's bf16 GEMMs 2-5x slower than one product; 16 MiB about as fast).
constexpr int64_t kTileBytes = 16 << 20;

int64_t tile_extent(int64_t total, int64_t other, int64_t align, int64_t elem) {
  int64_t t = std::max<int64_t>(1, kTileBytes / std::max<int64_t>(1, other * elem));
  if (align > 1) t = std::max(align, t / align * align);
  return std::min(total, t);
}

// x W^T, [rows, out], in x's dtype: for each tile of W's rows, that slice of y's columns.
at::Tensor x_wt(const at::Tensor& x2d, const at::Tensor& packed, const Weight4bit& w) {
  const int64_t out = w.out_features(), in = w.in_features();
  const auto opts = x2d.options();
  const int64_t step = tile_extent(out, in, 1, x2d.element_size());
  at::Tensor tile = at::empty({step, in}, opts);
  at::Tensor y = at::empty({x2d.size(0), out}, opts);
  for (int64_t o0 = 0; o0 < out; o0 += step) {
    const int64_t n = std::min(step, out - o0);
    at::Tensor t = tile.narrow(0, 0, n);
    dequantize_tile(packed, w.state, w.scales, o0, o0 + n, 0, in, t);
    at::Tensor cols = y.narrow(1, o0, n);
    at::mm_out(cols, x2d, t.t());
  }
  return y;
}

// g W, [rows, in]: for each block-aligned tile of W's columns, that slice of the result's
// columns (each output element is one product, as in the untiled GEMM: no partial sums).
at::Tensor g_w(const at::Tensor& g2d, const at::Tensor& packed, const Weight4bit& w) {
  // Off the host the whole weight is dequantized once (as bnb does on a GPU).
  if (!packed.device().is_cpu()) return at::mm(g2d, dequantize_weight(packed, w, g2d.scalar_type()));
  const int64_t out = w.out_features(), in = w.in_features();
  at::Tensor gx = at::empty({g2d.size(0), in}, g2d.options());
  const int64_t step = tile_extent(in, out, w.state.blocksize, g2d.element_size());
  at::Tensor tile = at::empty({out, step}, g2d.options());
  for (int64_t c0 = 0; c0 < in; c0 += step) {
    const int64_t n = std::min(step, in - c0);
    at::Tensor t = n == step ? tile : at::empty({out, n}, g2d.options());
    dequantize_tile(packed, w.state, w.scales, 0, out, c0, c0 + n, t);
    at::Tensor cols = gx.narrow(1, c0, n);
    at::mm_out(cols, g2d, t);
  }
  return gx;
}

// x W^T + b in x's dtype, over any leading dimensions.
at::Tensor product(const at::Tensor& x, const at::Tensor& packed, const Weight4bit& w, const at::Tensor& bias) {
  auto sizes = x.sizes().vec();
  sizes.back() = w.out_features();
  const at::Tensor x2d = x.reshape({-1, w.in_features()}).contiguous();
  at::Tensor y = packed.device().is_cpu() ? x_wt(x2d, packed, w)
                                          : at::linear(x2d, dequantize_weight(packed, w, x.scalar_type()));
  if (bias.defined()) y.add_(bias.to(y.scalar_type()));
  return y.view(sizes);
}

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
    return product(x, packed, *w, has_bias ? bias : at::Tensor());
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    auto ref = c10::static_intrusive_pointer_cast<StateRef>(ctx->saved_data["w"].toCapsule());
    const Weight4bit* w = ref->w.get();
    const at::Tensor& g = grad_out[0];
    const at::Tensor g2d = g.reshape({-1, g.size(-1)}).contiguous();
    auto sizes = g.sizes().vec();
    sizes.back() = w->in_features();
    at::Tensor grad_x = g_w(g2d, ctx->saved_data["packed"].toTensor(), *w).view(sizes);
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
  // Under autocast the product runs in autocast's dtype, as bnb's F.linear would (the
  // out= GEMMs used here are not autocast ops themselves), and the output stays in it, as
  // a dense Linear's does under autocast. (bnb casts back to the input's dtype, which in
  // HF's bf16 models is bf16 already; here a norm's output may be fp32, and an fp32 output
  // would double every activation saved after it: 38 against 27 GB on the GPU at 1B.)
  const auto device = x.device().type();
  const bool autocast = at::autocast::is_autocast_enabled(device);
  const at::ScalarType wanted = autocast ? at::autocast::get_autocast_dtype(device) : w.compute_dtype;
  const at::ScalarType out_dtype = autocast ? wanted : x.scalar_type();
  const at::ScalarType compute = x.is_cpu() ? compute_dtype_here(wanted) : wanted;
  const at::Tensor xc = x.to(compute);
  const at::Tensor b = bias.defined() ? bias.to(compute) : bias;
  at::Tensor y;
  if (at::GradMode::is_enabled() && (xc.requires_grad() || (b.defined() && b.requires_grad()))) {
    auto ref = c10::make_intrusive<StateRef>();
    ref->w = state;
    y = Linear4bitFunction::apply(xc, b.defined() ? b : at::empty({0}, xc.options()), packed, ref);
  } else if (const at::Tensor x2d = xc.reshape({-1, w.in_features()});
             gemv_4bit_applies(x2d, packed, w) || gemv_4bit_cuda_applies(x2d, packed, w)) {
    // Decoding: stream the packed codes once instead of writing a dequantized weight.
    auto sizes = x.sizes().vec();
    sizes.back() = w.out_features();
    y = x2d.is_cuda() ? gemv_4bit_cuda(x2d, packed, w) : gemv_4bit(x2d, packed, w);
    if (b.defined()) y = y + b.to(at::kFloat);
    y = y.view(sizes);
  } else {
    y = product(xc, packed, w, b.defined() ? b : at::Tensor());
  }
  return y.to(out_dtype);
}

}  // namespace peft::quant
