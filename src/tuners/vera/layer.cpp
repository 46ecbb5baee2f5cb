// VeraLayer: forward, merge and unmerge as HF PEFT's vera.Linear computes them.
#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <c10/core/GradMode.h>

#include "peft/layers.h"
#include "tuners/delta_merge.h"
#include "peft/vera.h"

namespace peft {

VeraLayer::VeraLayer(AdaptableLayer* host, std::shared_ptr<VeraProjection> projection, int64_t r, double dropout_)
    : LayerAdapter(host), dropout(dropout_), projection_(std::move(projection)) {
  const int64_t out = host->output_dim();
  lambda_b = at::zeros({out}, at::kFloat);
  lambda_d = at::zeros({r}, at::kFloat);
  register_parameter("vera_lambda_b", &lambda_b, {out});
  register_parameter("vera_lambda_d", &lambda_d, {r});
}

at::Tensor VeraLayer::sliced_A() const { return projection_->A.narrow(1, 0, host_->input_dim()); }
at::Tensor VeraLayer::sliced_B() const { return projection_->B.narrow(0, 0, host_->output_dim()); }

std::vector<LayerAdapter::SharedSlot> VeraLayer::shared_slots() {
  if (!projection_->saved) return {};  // regenerated from projection_prng_key instead
  return {{"base_model.vera_A", &projection_->A}, {"base_model.vera_B", &projection_->B}};
}

at::Tensor VeraLayer::forward(const at::Tensor& x, const at::Tensor& out) {
  // Under autocast the products run in bf16 whatever x is (as LoRA's forward).
  auto xa = at::autocast::is_autocast_enabled(x.device().type()) ? x : x.to(lambda_d.scalar_type());
  if (training && dropout > 0) xa = at::dropout(xa, dropout, true);
  const auto A = sliced_A().to(xa.device(), xa.scalar_type());
  const auto B = sliced_B().to(xa.device(), xa.scalar_type());
  auto delta = lambda_b * at::linear(lambda_d * at::linear(xa, A), B);
  return out + delta.to(out.scalar_type());
}

at::Tensor VeraLayer::delta_weight() const {
  const auto A = sliced_A().to(lambda_d.device(), at::kFloat);
  const auto B = sliced_B().to(lambda_d.device(), at::kFloat);
  return at::matmul(lambda_b.to(at::kFloat).unsqueeze(-1) * B, lambda_d.to(at::kFloat).unsqueeze(-1) * A);
}

void VeraLayer::merge() {
  if (merged_) return;
  add_delta_to_host(*host_, delta_weight(), +1);
  merged_ = true;
}

void VeraLayer::unmerge() {
  if (!merged_) return;
  add_delta_to_host(*host_, delta_weight(), -1);
  merged_ = false;
}

}  // namespace peft
