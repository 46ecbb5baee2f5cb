// OFTLayer: HF PEFT 0.21's OFTRotationModule (skew-symmetric blocks, Cayley or
// Cayley-Neumann, COFT's projection) and its Linear / Embedding merge and unmerge.
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <cmath>

#include "peft/oft.h"
#include "tuners/delta_merge.h"

namespace peft {

namespace {

// The positions of the b(b-1)/2 upper-triangle entries in a flattened [b, b] block, in
// torch.triu_indices(b, b, 1) order (row by row).
at::Tensor upper_positions(int64_t b, at::Device device) {
  const auto iu = at::triu_indices(b, b, 1, at::TensorOptions(at::kLong).device(device));
  return iu[0] * b + iu[1];
}

// HF's _pytorch_skew_symmetric: Q [k, b, b] with vec above the diagonal, -vec below.
at::Tensor skew(const at::Tensor& vec, int64_t b) {
  const int64_t k = vec.size(0);
  const auto q = at::zeros({k, b * b}, vec.options()).index_copy(1, upper_positions(b, vec.device()), vec);
  const auto m = q.view({k, b, b});
  return m - m.transpose(-2, -1);
}

// HF's _project_batch (COFT): a block whose skew matrix has Frobenius norm above
// eps / sqrt(k) is scaled down onto that radius; the others stay. In fp32 as HF.
at::Tensor coft_project(const at::Tensor& vec, int64_t b, double eps) {
  const auto q = skew(vec, b);
  const auto radius = at::scalar_tensor(static_cast<double>(vec.size(0)), q.options()).sqrt().reciprocal() * eps;
  const auto norm = at::linalg_vector_norm(q, 2, at::IntArrayRef{1, 2}, /*keepdim=*/true);
  const auto out = at::where(norm <= radius, q, radius * (q / norm));
  return out.reshape({vec.size(0), b * b}).index_select(1, upper_positions(b, vec.device()));
}

// HF's _cayley_batch: (I - Q)(I + Q)^-1 exactly, or the Neumann series
// I + 2Q + 2Q^2 + ... + 2Q^(n-2) + Q^(n-1) (n = terms), with HF's operation order.
at::Tensor cayley(const at::Tensor& q, bool neumann, int64_t terms) {
  const int64_t k = q.size(0), b = q.size(1);
  const auto eye = at::eye(b, q.options()).expand({k, b, b});
  if (!neumann) return at::linalg_solve(eye + q, eye - q, /*left=*/false);
  at::Tensor R = eye.clone();
  if (terms <= 1) return R;
  R = R.add(q, 2.0);
  if (terms <= 2) return R;
  const auto q2 = at::bmm(q, q);
  R = R.add(q2, 2.0);
  at::Tensor power = q2;
  for (int64_t i = 3; i < terms - 1; ++i) {
    power = at::bmm(power, q);
    R = R.add(power, 2.0);
  }
  power = at::bmm(power, q);
  return R.add(power);
}

}  // namespace

OFTLayer::OFTLayer(AdaptableLayer* host, int64_t blocks_, int64_t block_size_, const OFTConfig& c)
    : LayerAdapter(host),
      blocks(blocks_),
      block_size(block_size_),
      on_embedding_(host->kind() == LayerKind::kEmbedding),
      coft_(c.coft),
      block_share_(c.block_share),
      neumann_(c.use_cayley_neumann),
      eps_(c.eps),
      neumann_terms_(c.num_cayley_neumann_terms) {
  const int64_t rows = block_share_ ? 1 : blocks, n = block_size * (block_size - 1) / 2;
  weight = at::zeros({rows, n}, at::kFloat);
  register_parameter(on_embedding_ ? "oft_embedding_R.weight" : "oft_R.weight", &weight, {rows, n});
}

at::Tensor OFTLayer::block_rotations() {
  if (coft_) {
    // As HF: every use projects the trained values in place, so they stay in the ball.
    c10::NoGradGuard g;
    weight.copy_(coft_project(weight, block_size, eps_));
  }
  auto R = cayley(skew(weight, block_size), neumann_, neumann_terms_);
  return block_share_ ? R.expand({blocks, block_size, block_size}) : R;
}

at::Tensor OFTLayer::rotation() {
  const auto R = block_rotations().to(at::kFloat);
  return at::block_diag(R.unbind(0));
}

at::Tensor OFTLayer::rotate(const at::Tensor& x) {
  const auto R = block_rotations();
  const auto xr = x.to(R.scalar_type()).reshape({-1, blocks, block_size});
  return at::einsum("nrk,rkc->nrc", {xr, R}).reshape(x.sizes()).to(x.scalar_type());
}

at::Tensor OFTLayer::transform_input(const at::Tensor& x) { return on_embedding_ ? x : rotate(x); }

at::Tensor OFTLayer::forward(const at::Tensor& x, const at::Tensor& out) { return on_embedding_ ? rotate(out) : out; }

// Linear: W <- W R^T (HF: (R W^T)^T); Embedding: E <- E R. Unmerge uses R^-1 in place of R.
void OFTLayer::fold(bool inverse) {
  c10::NoGradGuard g;
  auto R = rotation();
  if (inverse) R = at::linalg_inv(R);
  const auto w = host_->dense_weight().to(R.device(), at::kFloat);
  const auto delta = (on_embedding_ ? at::mm(w, R) : at::mm(R, w.t()).t()) - w;
  add_delta_to_host(*host_, on_embedding_ ? delta.t() : delta, +1);  // the helper takes [out, in]
}

void OFTLayer::merge() {
  if (merged_) return;
  fold(false);
  merged_ = true;
}

void OFTLayer::unmerge() {
  if (!merged_) return;
  fold(true);
  merged_ = false;
}

}  // namespace peft
