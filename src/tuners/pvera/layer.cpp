// PveraLayer: forward, merge and unmerge as HF PEFT's pvera.Linear computes them.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/autocast_mode.h>

#include "peft/layers.h"
#include "peft/pvera.h"
#include "tuners/delta_merge.h"

namespace peft {

PveraLayer::PveraLayer(AdaptableLayer* host, std::shared_ptr<VeraProjection> projection, int64_t r, double dropout_,
                       bool sample_at_inference_, std::optional<uint64_t> generator_seed)
    : LayerAdapter(host), dropout(dropout_), sample_at_inference(sample_at_inference_),
      projection_(std::move(projection)) {
  const int64_t out = host->output_dim();
  lambda_b = at::zeros({out}, at::kFloat);
  lambda_d = at::zeros({2 * r}, at::kFloat);
  register_parameter("pvera_lambda_b", &lambda_b, {out});
  register_parameter("pvera_lambda_d", &lambda_d, {2 * r});
  // One generator per layer, seeded alike (HF's per-adapter torch.Generator in each layer).
  if (generator_seed) generator_ = at::detail::createCPUGenerator(*generator_seed);
}

at::Tensor PveraLayer::sliced_A() const { return projection_->A.narrow(1, 0, host_->input_dim()); }
at::Tensor PveraLayer::sliced_B() const { return projection_->B.narrow(0, 0, host_->output_dim()); }

std::vector<LayerAdapter::SharedSlot> PveraLayer::shared_slots() {
  if (!projection_->saved) return {};  // regenerated from projection_prng_key instead
  return {{"base_model.pvera_A", &projection_->A}, {"base_model.pvera_B", &projection_->B}};
}

at::Tensor PveraLayer::reparametrize(const at::Tensor& mu, const at::Tensor& logvar) {
  if (!(training || sample_at_inference)) return mu;
  const auto std = at::exp(0.5 * logvar);
  if (!generator_) return mu + at::randn_like(std) * std;
  // The generator lives on the CPU (as HF's): draw there, then move the noise.
  const auto eps = at::randn(std.sizes(), *generator_, at::TensorOptions(std.scalar_type())).to(std.device());
  return mu + eps * std;
}

at::Tensor PveraLayer::forward(const at::Tensor& x, const at::Tensor& out) {
  // Under autocast the products run in bf16 whatever x is (as LoRA's forward).
  auto xa = at::autocast::is_autocast_enabled(x.device().type()) ? x : x.to(lambda_d.scalar_type());
  if (training && dropout > 0) xa = at::dropout(xa, dropout, true);
  const auto A = sliced_A().to(xa.device(), xa.scalar_type());
  const auto B = sliced_B().to(xa.device(), xa.scalar_type());
  const auto halves = (lambda_d * at::linear(xa, A)).chunk(2, -1);  // mu, logvar
  auto delta = lambda_b * at::linear(reparametrize(halves[0], halves[1]), B);
  return out + delta.to(out.scalar_type());
}

at::Tensor PveraLayer::delta_weight() const {
  // Only the mean half merges (HF: "we can only do mean sampling").
  const int64_t r = lambda_d.size(0) / 2;
  const auto A = sliced_A().narrow(0, 0, r).to(lambda_d.device(), at::kFloat);
  const auto B = sliced_B().to(lambda_d.device(), at::kFloat);
  const auto d = lambda_d.to(at::kFloat).narrow(0, 0, r);
  return at::matmul(lambda_b.to(at::kFloat).unsqueeze(-1) * B, d.unsqueeze(-1) * A);
}

void PveraLayer::merge() {
  if (merged_) return;
  add_delta_to_host(*host_, delta_weight(), +1);
  merged_ = true;
}

void PveraLayer::unmerge() {
  if (!merged_) return;
  add_delta_to_host(*host_, delta_weight(), -1);
  merged_ = false;
}

}  // namespace peft
