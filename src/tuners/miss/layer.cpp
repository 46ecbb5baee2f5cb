// MissLayer: HF PEFT 0.21's MissLinear (balance, mini and bat forward, merge, unmerge).
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include "peft/miss.h"
#include "tuners/delta_merge.h"

namespace peft {

namespace {

// W [out, in] as r x r blocks [in / r, out / r, r, r] (HF's reshape + permute), and back.
at::Tensor to_blocks(const at::Tensor& w, int64_t r) {
  return w.reshape({w.size(0) / r, r, w.size(1) / r, r}).permute({2, 0, 1, 3});
}
at::Tensor from_blocks(const at::Tensor& b, int64_t out, int64_t in) { return b.permute({1, 2, 0, 3}).reshape({out, in}); }

}  // namespace

MissLayer::MissLayer(AdaptableLayer* host, Kind kind_, int64_t r_, int64_t mini_r, double dropout_)
    : LayerAdapter(host), kind(kind_), r(r_), dropout(dropout_) {
  const int64_t out = host->output_dim();
  const std::vector<int64_t> shape = kind == Kind::kBat    ? std::vector<int64_t>{out / r, r, r}
                                     : kind == Kind::kMini ? std::vector<int64_t>{r, mini_r}
                                                           : std::vector<int64_t>{r, out};
  block = at::zeros(shape, at::kFloat);
  register_parameter("miss_block", &block, shape);
}

at::Tensor MissLayer::host_weight() const { return host_->dense_weight().to(block.device(), at::kFloat); }

at::Tensor MissLayer::delta_weight(const at::Tensor& w) const {
  const int64_t out = host_->output_dim(), in = host_->input_dim();
  const auto M = block.to(at::kFloat);
  if (kind == Kind::kBat) return from_blocks(at::matmul(to_blocks(w, r), M) + M, out, in);
  const auto full = kind == Kind::kMini ? M.repeat({1, out / M.size(1)}) : M;  // [r, out]
  return full.t().repeat({1, (in + r - 1) / r}).narrow(1, 0, in);              // column j: M[j mod r]
}

at::Tensor MissLayer::forward(const at::Tensor& x, const at::Tensor& out) {
  if (kind == Kind::kBat) {
    // HF: F.linear(x, W + dW(W), b); the base already gave x W^T + b.
    const auto d = delta_weight(host_weight());
    return out + at::linear(x.to(d.scalar_type()), d).to(out.scalar_type());
  }
  const int64_t out_dim = host_->output_dim();
  const auto M = kind == Kind::kMini ? block.repeat({1, out_dim / block.size(1)}) : block;
  auto xa = x.to(M.scalar_type());
  if (const int64_t pad = (r - xa.size(-1) % r) % r; pad > 0) xa = at::constant_pad_nd(xa, {0, pad});
  if (training && dropout > 0) xa = at::dropout(xa, dropout, true);
  auto shape = xa.sizes().vec();
  shape.back() /= r;
  shape.push_back(r);
  return out + at::matmul(xa.reshape(shape).sum(-2), M).to(out.scalar_type());
}

void MissLayer::merge() {
  if (merged_) return;
  c10::NoGradGuard g;
  add_delta_to_host(*host_, delta_weight(host_weight()), +1);
  merged_ = true;
}

void MissLayer::unmerge() {
  if (!merged_) return;
  c10::NoGradGuard g;
  if (kind == Kind::kBat) {
    // W' = W (I + M) + M per block, so W = (W' - M)(I + M)^-1.
    const auto w = host_weight();
    const auto M = block.to(at::kFloat);
    const auto inv = at::linalg_inv(at::eye(r, M.options()) + M);
    const auto restored = from_blocks(at::matmul(to_blocks(w, r) - M, inv), w.size(0), w.size(1));
    add_delta_to_host(*host_, restored - w, +1);
  } else {
    add_delta_to_host(*host_, delta_weight(at::Tensor()), -1);
  }
  merged_ = false;
}

}  // namespace peft
