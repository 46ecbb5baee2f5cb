// GraloraLayer: HF PEFT 0.21's gralora.Linear (forward, get_delta_weight, merge, unmerge).
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include "peft/gralora.h"
#include "tuners/delta_merge.h"

namespace peft {

GraloraLayer::GraloraLayer(AdaptableLayer* host, int64_t r_, int64_t hybrid_r_, int64_t k_, double scale_,
                           double dropout_)
    : LayerAdapter(host), r(r_), hybrid_r(hybrid_r_), k(k_), scale(scale_), dropout(dropout_) {
  const int64_t in = host->input_dim(), out = host->output_dim();
  A = at::zeros({k, in / k, r}, at::kFloat);
  B = at::zeros({k, r, out / k}, at::kFloat);
  register_parameter("gralora_A", &A, {k, in / k, r});
  register_parameter("gralora_B", &B, {k, r, out / k});
  if (hybrid_r > 0) {
    A_general = at::zeros({hybrid_r, in}, at::kFloat);
    B_general = at::zeros({out, hybrid_r}, at::kFloat);
    register_parameter("gralora_A_general.weight", &A_general, {hybrid_r, in});
    register_parameter("gralora_B_general.weight", &B_general, {out, hybrid_r});
  }
}

std::vector<at::Tensor*> GraloraLayer::trainable_slots() {
  if (hybrid_r > 0) return {&A, &B, &A_general, &B_general};
  return {&A, &B};
}

// HF's two einsums as batched products over the blocks: x_n A_n for every input block n,
// regrouped so output block j gathers the j-th rank slice of each, then times B_j.
at::Tensor GraloraLayer::block_product(const at::Tensor& x) const {
  const int64_t in = A.size(0) * A.size(1), sub_r = r / k, out = B.size(0) * B.size(2);
  const auto dt = x.scalar_type();
  const auto rows = x.reshape({-1, k, in / k}).transpose(0, 1);                      // [n, M, in/k]
  const int64_t m = rows.size(1);
  auto h = at::bmm(rows, A.to(dt));                                                  // [n, M, r]
  h = h.view({k, m, k, sub_r}).permute({2, 1, 0, 3}).reshape({k, m, r});             // [j, M, n·r/k]
  auto y = at::bmm(h, B.to(dt));                                                     // [j, M, out/k]
  auto sizes = x.sizes().vec();
  sizes.back() = out;
  return y.transpose(0, 1).reshape(sizes);
}

at::Tensor GraloraLayer::forward(const at::Tensor& x, const at::Tensor& out) {
  const auto xd = training && dropout > 0 ? at::dropout(x, dropout, true) : x;
  auto h = block_product(xd);
  if (hybrid_r > 0) {
    const auto dt = x.scalar_type();
    h = h + at::linear(at::linear(xd, A_general.to(dt)), B_general.to(dt));
  }
  return out + (h * scale).to(out.scalar_type());
}

// The block term's matrix is the map applied to the identity (rows = input features).
at::Tensor GraloraLayer::delta_weight() const {
  const int64_t in = A.size(0) * A.size(1);
  auto d = block_product(at::eye(in, A.options())).t();  // [out, in]
  if (hybrid_r > 0) d = d + at::mm(B_general, A_general);
  return d * scale;
}

void GraloraLayer::merge() {
  if (merged_) return;
  c10::NoGradGuard g;
  add_delta_to_host(*host_, delta_weight(), +1);
  merged_ = true;
}

void GraloraLayer::unmerge() {
  if (!merged_) return;
  c10::NoGradGuard g;
  add_delta_to_host(*host_, delta_weight(), -1);
  merged_ = false;
}

}  // namespace peft
