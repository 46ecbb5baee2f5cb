// FourierFTLayer: HF PEFT's FourierFTLinear (forward, merge, unmerge through dW).
#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <c10/core/GradMode.h>

#include "peft/fourierft.h"
#include "peft/layers.h"
#include "tuners/delta_merge.h"

namespace peft {

FourierFTLayer::FourierFTLayer(AdaptableLayer* host, int64_t n, double scaling_, uint64_t seed)
    : LayerAdapter(host), scaling(scaling_) {
  const int64_t in = host->input_dim(), out = host->output_dim();
  // torch.randperm(out * in, generator=torch.Generator().manual_seed(seed))[:n], as HF.
  auto gen = at::detail::createCPUGenerator(seed);
  const auto idx = at::randperm(out * in, gen, at::TensorOptions(at::kLong)).narrow(0, 0, n);
  rows = at::div(idx, in, "floor").to(host->weight_tensor()->device());
  cols = at::remainder(idx, in).to(host->weight_tensor()->device());
  spectrum = at::zeros({n}, at::kFloat);
  register_parameter("fourierft_spectrum", &spectrum, {n});
}

at::Tensor FourierFTLayer::delta_weight() const {
  const int64_t in = host_->input_dim(), out = host_->output_dim();
  auto dense = at::zeros({out, in}, spectrum.options().dtype(at::kFloat));
  dense = dense.index_put({rows.to(spectrum.device()), cols.to(spectrum.device())}, spectrum.to(at::kFloat));
  return at::real(at::fft_ifft2(dense)) * scaling;
}

at::Tensor FourierFTLayer::forward(const at::Tensor& x, const at::Tensor& out) {
  auto xa = at::autocast::is_autocast_enabled(x.device().type()) ? x : x.to(at::kFloat);
  const auto d = delta_weight();
  return out + at::linear(xa, d.to(xa.scalar_type())).to(out.scalar_type());
}

void FourierFTLayer::merge() {
  if (merged_) return;
  add_delta_to_host(*host_, delta_weight(), +1);
  merged_ = true;
}

void FourierFTLayer::unmerge() {
  if (!merged_) return;
  add_delta_to_host(*host_, delta_weight(), -1);
  merged_ = false;
}

}  // namespace peft
