// HiraLayer: HF PEFT 0.21's hira.Linear and hira.Embedding (forward, merge, unmerge).
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include "peft/hira.h"
#include "tuners/delta_merge.h"

namespace peft {

HiraLayer::HiraLayer(AdaptableLayer* host, int64_t r_, double dropout_, bool embedding_)
    : LayerAdapter(host), r(r_), dropout(dropout_), embedding(embedding_) {
  const int64_t in = host->input_dim(), out = host->output_dim();
  A = at::zeros({r, in}, at::kFloat);
  B = at::zeros({out, r}, at::kFloat);
  register_parameter(embedding ? "hira_embedding_A" : "hira_A", &A, {r, in});
  register_parameter(embedding ? "hira_embedding_B" : "hira_B", &B, {out, r});
}

// W [out, in] (an embedding's table transposed) times B A, elementwise.
at::Tensor HiraLayer::delta_weight() const {
  at::Tensor w = host_->dense_weight();
  if (host_->weight_is_in_out()) w = w.t();
  return w.to(A.scalar_type()) * modulation();
}

at::Tensor HiraLayer::forward(const at::Tensor& x, const at::Tensor& out) {
  if (embedding) return out + at::embedding(delta_weight().t(), x).to(out.scalar_type());
  const auto xd = training && dropout > 0 ? at::dropout(x, dropout, true) : x;
  return out + at::linear(xd, delta_weight().to(x.scalar_type())).to(out.scalar_type());
}

void HiraLayer::merge() {
  if (merged_) return;
  c10::NoGradGuard g;
  weight_before_merge_ = host_->dense_weight().clone();
  add_delta_to_host(*host_, delta_weight(), +1);
  merged_ = true;
}

void HiraLayer::unmerge() {
  if (!merged_) return;
  c10::NoGradGuard g;
  host_->assign_weight(weight_before_merge_);
  weight_before_merge_ = at::Tensor();
  merged_ = false;
}

}  // namespace peft
