// BOFTLayer: HF PEFT 0.21's boft.Linear on its PyTorch path (cayley_batch, the
// multiplicative block dropout, torch.block_diag), its forward, merge and unmerge.
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include "peft/boft.h"

namespace peft {

BOFTLayer::BOFTLayer(AdaptableLayer* host, int64_t blocks_, int64_t block_size_, double dropout)
    : LayerAdapter(host), blocks(blocks_), block_size(block_size_), dropout_(dropout) {
  const int64_t out = host->output_dim();
  R = at::zeros({1, blocks, block_size, block_size}, at::kFloat);
  s = at::ones({out, 1}, at::kFloat);
  register_parameter("boft_R", &R, {1, blocks, block_size, block_size});
  register_parameter("boft_s", &s, {out, 1});
}

at::Tensor BOFTLayer::block_rotations() {
  // HF's cayley_batch: the skew part Q = (B - B^T) / 2 of each block, then (I - Q)(I + Q)^-1
  // (solved from the right, as torch.linalg.solve(I + Q, I - Q, left=False)).
  const auto b = R.view({blocks, block_size, block_size});
  const auto q = 0.5 * (b - b.transpose(1, 2));
  const auto eye = at::eye(block_size, b.options()).expand({blocks, block_size, block_size});
  auto rot = at::linalg_solve(eye + q, eye - q, /*left=*/false);
  if (training && dropout_ > 0.0) {
    // HF's MultiplicativeDropoutLayer: int(p * D) blocks, chosen at random, become I.
    const int64_t k = static_cast<int64_t>(dropout_ * static_cast<double>(blocks));
    const auto mask = at::zeros({blocks}, b.options())
                          .index_fill(0, at::randperm(blocks, at::TensorOptions(at::kLong)).slice(0, 0, k).to(b.device()), 1.0)
                          .view({blocks, 1, 1});
    rot = (1 - mask) * rot + mask * eye;
  }
  return rot;
}

at::Tensor BOFTLayer::rotation() { return at::block_diag(block_rotations().to(at::kFloat).unbind(0)); }

at::Tensor BOFTLayer::transform_input(const at::Tensor& x) {
  // x M with M block-diagonal: each block of H input features times its own rotation.
  const auto rot = block_rotations().to(x.scalar_type());
  const auto xb = x.reshape({-1, blocks, block_size});
  return at::einsum("ndh,dhk->ndk", {xb, rot}).reshape(x.sizes());
}

at::Tensor BOFTLayer::forward(const at::Tensor& x, const at::Tensor& out) {
  // HF scales the output without its bias: (out - b) * s + b.
  const auto scale = s.squeeze(-1).to(out.scalar_type());
  const at::Tensor* bias = host_->bias_tensor();
  if (!bias || !bias->defined()) return out * scale;
  const auto b = bias->to(out.scalar_type());
  return (out - b) * scale + b;
}

// Merge: W <- (M W^T)^T * s = (W M^T) * s; unmerge: W <- (M^T W^T)^T / s = (W M) / s, as HF.
void BOFTLayer::fold(bool inverse) {
  c10::NoGradGuard g;
  const auto M = rotation();
  const auto w = host_->dense_weight().to(M.device(), at::kFloat);
  const auto scale = s.to(M.device(), at::kFloat);
  host_->assign_weight(inverse ? at::mm(w, M) * (1 / scale) : at::mm(w, M.t()) * scale);
}

void BOFTLayer::merge() {
  if (merged_) return;
  fold(false);
  merged_ = true;
}

void BOFTLayer::unmerge() {
  if (!merged_) return;
  fold(true);
  merged_ = false;
}

}  // namespace peft
