// waverec2d for one level, as HF's (the same filters, convolution and cropping).
#include "tuners/waveft/waverec2d.h"

#include <stdexcept>

#include "tuners/waveft/wavelets.h"

namespace peft {

namespace {

at::Tensor outer_product(const at::Tensor& a, const at::Tensor& b) { return a.unsqueeze(-1) * b.unsqueeze(0); }

// HF's _construct_2d_filt: [ll, lh, hl, hh] as [4, 1, L, L], lh = outer(hi, lo) (rows high-pass).
at::Tensor filter_bank(const WaveletFilters& f, const at::TensorOptions& opts) {
  const auto as_tensor = [&](const std::vector<double>& v) {
    return at::tensor(at::ArrayRef<double>(v), at::TensorOptions(at::kDouble)).to(opts.device(), opts.dtype());
  };
  const auto lo = as_tensor(f.rec_lo), hi = as_tensor(f.rec_hi);
  return at::stack({outer_product(lo, lo), outer_product(hi, lo), outer_product(lo, hi), outer_product(hi, hi)}, 0)
      .unsqueeze(1);
}

}  // namespace

at::Tensor waverec2d(const at::Tensor& cA, const at::Tensor& cH, const at::Tensor& cV, const at::Tensor& cD,
                     const std::string& family) {
  if (cA.dim() != 2 || cH.sizes() != cA.sizes() || cV.sizes() != cA.sizes() || cD.sizes() != cA.sizes())
    throw std::invalid_argument("waverec2d: the four coefficient matrices must be 2-D and of one shape");
  const auto& f = wavelet_filters(family);
  const int64_t L = static_cast<int64_t>(f.rec_lo.size());
  const auto filt = filter_bank(f, cA.options());
  auto y = at::conv_transpose2d(at::stack({cA, cH, cV, cD}, 0).unsqueeze(0), filt, /*bias=*/{}, /*stride=*/2);
  y = y.squeeze(1).squeeze(0);
  const int64_t pad = (2 * L - 3) / 2;  // HF's padl = padr = padt = padb
  if (pad > 0) y = y.slice(0, pad, y.size(0) - pad).slice(1, pad, y.size(1) - pad);
  return y;
}

}  // namespace peft
