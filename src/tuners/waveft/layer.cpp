// WaveftLayer: HF PEFT 0.21's WaveFTLinear (the seeded positions, get_delta_weight's padding,
// reconstruction and cropping, the forward, merge, unmerge).
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/autocast_mode.h>

#include "peft/layers.h"
#include "peft/waveft.h"
#include "tuners/delta_merge.h"
#include "tuners/waveft/wavelets.h"
#include "tuners/waveft/waverec2d.h"

namespace peft {

namespace {

// HF's get_delta_weight with use_idwt: the coefficients placed centred in a zero
// [out + p, in + p] matrix (each side rounded up to even), its quarters reconstructed, the
// result cropped to [out, in] about its centre.
at::Tensor idwt_delta(const at::Tensor& spectrum, const at::Tensor& rows, const at::Tensor& cols, int64_t out,
                      int64_t in, const std::string& family) {
  const int64_t p = wavelet_filters(family).reduction;
  const int64_t H = (out + p) + (out + p) % 2, W = (in + p) + (in + p) % 2;
  // Every position stays inside (HF's out-of-bounds filter never drops one).
  auto dense = at::zeros({H, W}, spectrum.options())
                   .index_put({rows + (H - out) / 2, cols + (W - in) / 2}, spectrum);
  const int64_t h = H / 2, w = W / 2;
  auto d = waverec2d(dense.slice(0, 0, h).slice(1, 0, w), dense.slice(0, 0, h).slice(1, w),
                     dense.slice(0, h).slice(1, 0, w), dense.slice(0, h).slice(1, w), family);
  if (d.size(0) != out || d.size(1) != in) {
    const int64_t r0 = (d.size(0) - out) / 2, c0 = (d.size(1) - in) / 2;
    d = d.slice(0, r0, r0 + out).slice(1, c0, c0 + in);
  }
  return d;
}

}  // namespace

WaveftLayer::WaveftLayer(AdaptableLayer* host, int64_t n, const WaveftConfig& c)
    : LayerAdapter(host), scaling(c.scaling), wavelet_family(c.wavelet_family), use_idwt(c.use_idwt) {
  const int64_t in = host->input_dim(), out = host->output_dim();
  // torch.randperm(out * in, generator=torch.Generator().manual_seed(seed))[:n], as HF (and
  // FourierFT); kept in draw order, which is the spectrum's.
  auto gen = at::detail::createCPUGenerator(c.random_loc_seed);
  const auto idx = at::randperm(out * in, gen, at::TensorOptions(at::kLong)).narrow(0, 0, n);
  const auto dev = host->weight_tensor()->device();
  rows = at::div(idx, in, "floor").to(dev);
  cols = at::remainder(idx, in).to(dev);
  spectrum = at::zeros({n}, at::kFloat);
  register_parameter("waveft_spectrum", &spectrum, {n});
}

at::Tensor WaveftLayer::delta_weight() const {
  const int64_t in = host_->input_dim(), out = host_->output_dim();
  const auto s = spectrum.to(at::kFloat);
  const auto r = rows.to(s.device()), c = cols.to(s.device());
  if (use_idwt) return idwt_delta(s, r, c, out, in, wavelet_family) * scaling;
  return at::zeros({out, in}, s.options()).index_put({r, c}, s) * scaling;
}

// HF: base(x) + F.linear(x in ΔW's dtype, ΔW), the sum back in x's dtype.
at::Tensor WaveftLayer::forward(const at::Tensor& x, const at::Tensor& out) {
  const auto d = delta_weight();
  const auto xa = at::autocast::is_autocast_enabled(x.device().type()) ? x : x.to(d.scalar_type());
  return (out + at::linear(xa, d.to(xa.scalar_type()))).to(out.scalar_type());
}

void WaveftLayer::merge() {
  if (merged_) return;
  add_delta_to_host(*host_, delta_weight(), +1);
  merged_ = true;
}

void WaveftLayer::unmerge() {
  if (!merged_) return;
  add_delta_to_host(*host_, delta_weight(), -1);
  merged_ = false;
}

}  // namespace peft
