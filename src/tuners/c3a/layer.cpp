// C3ALayer: HF PEFT 0.21's C3ALinear (block-circular convolution, merge, unmerge).
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include "peft/c3a.h"
#include "tuners/delta_merge.h"

namespace peft {

at::Tensor block_circular_convolution(const at::Tensor& x, const at::Tensor& kernel) {
  // HF's BlockCircularConvolution.forward. Its hand-written backward gets the input's
  // gradient wrong for block sizes above 2 (torch.autograd.gradcheck fails; the kernel's
  // is right): ATen's autograd through the same FFTs gives the true gradient of both.
  const int64_t n = kernel.size(1), b = kernel.size(2);
  const auto chunks = x.unflatten(-1, {n, b});
  const auto mixed = at::einsum("...nb,mnb->...mb", {at::fft_ifft(chunks), at::fft_fft(kernel)});
  return at::real(at::fft_fft(mixed)).flatten(-2);
}

C3ALayer::C3ALayer(AdaptableLayer* host, int64_t block_size_) : LayerAdapter(host), block_size(block_size_) {
  const int64_t m = host->output_dim() / block_size, n = host->input_dim() / block_size;
  kernel = at::zeros({m, n, block_size}, at::kFloat);
  register_parameter("c3a_kernel", &kernel, {m, n, block_size});
}

at::Tensor C3ALayer::delta_weight() const {
  // get_circulant_fast: the convolution of the identity's rows, transposed; / in as HF.
  const int64_t in = host_->input_dim();
  const auto w = kernel.to(at::kFloat);
  return block_circular_convolution(at::eye(in, w.options()), w).t() / static_cast<double>(in);
}

at::Tensor C3ALayer::forward(const at::Tensor& x, const at::Tensor& out) {
  // HF computes in fp32 whatever the model's dtype (bf16 has no FFT): x and the kernel
  // cast up, the result cast to the output's dtype.
  const auto xf = x.to(at::kFloat);
  const auto y = block_circular_convolution(xf, kernel.to(at::kFloat)) / static_cast<double>(x.size(-1));
  return out + y.to(out.scalar_type());
}

void C3ALayer::merge() {
  if (merged_) return;
  add_delta_to_host(*host_, delta_weight(), +1);
  merged_ = true;
}

void C3ALayer::unmerge() {
  if (!merged_) return;
  add_delta_to_host(*host_, delta_weight(), -1);
  merged_ = false;
}

}  // namespace peft
