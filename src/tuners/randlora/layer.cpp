// RandLoraLayer: forward, merge and unmerge as HF PEFT's randlora.Linear computes them.
// HF's UniqueBaseGrad (a custom autograd function that saves memory in backward) is the
// plain product here; autograd gives the same gradients.
#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>

#include "peft/layers.h"
#include "peft/randlora.h"
#include "tuners/delta_merge.h"

namespace peft {

RandLoraLayer::RandLoraLayer(AdaptableLayer* host, std::shared_ptr<RandLoraBases> bases, int64_t r, double scaling_,
                             double dropout_, std::string file_prefix)
    : LayerAdapter(host),
      scaling(scaling_),
      dropout(dropout_),
      bases_(std::move(bases)),
      file_prefix_(std::move(file_prefix)) {
  const int64_t in = host->input_dim(), out = host->output_dim();
  num_bases = randlora_num_bases(in, out, r);
  lambda = at::zeros({r, num_bases}, at::kFloat);
  gamma = at::zeros({num_bases, std::min(in, out)}, at::kFloat);
  register_parameter("randlora_lambda", &lambda, {r, num_bases});
  register_parameter("randlora_gamma", &gamma, {num_bases, std::min(in, out)});
}

std::vector<LayerAdapter::SharedSlot> RandLoraLayer::shared_slots() {
  if (!bases_->saved) return {};  // regenerated from projection_prng_key instead
  // HF files the bases once for the model and again under every layer that refers to them.
  return {{"base_model.randlora_A", &bases_->A},
          {"base_model.randlora_B", &bases_->B},
          {file_prefix_ + "randlora_A", &bases_->A},
          {file_prefix_ + "randlora_B", &bases_->B}};
}

std::pair<at::Tensor, at::Tensor> RandLoraLayer::scaled_bases(at::Device device, at::ScalarType dtype) const {
  const int64_t in = host_->input_dim(), out = host_->output_dim();
  const int64_t min_dim = std::min(in, out), max_dim = std::max(in, out);
  // randlora_A[:, :n, :min_dim] (its middle dimension is 1) and randlora_B[:max_dim, :n, :].
  const auto A = bases_->A.narrow(2, 0, min_dim).to(device, dtype);
  const auto B = bases_->B.narrow(0, 0, max_dim).narrow(1, 0, num_bases).to(device, dtype);
  const auto update_B = B.flatten(1);                                                            // [max, n r]
  const auto update_A = (lambda.to(dtype).unsqueeze(2) * A * gamma.to(dtype).unsqueeze(0)).flatten(0, 1);  // [r n, min]
  // The trained factor always sits on the smaller side.
  if (min_dim == in) return {update_A, update_B};
  return {update_B.t(), update_A.t()};
}

at::Tensor RandLoraLayer::forward(const at::Tensor& x, const at::Tensor& out) {
  // Under autocast the products run in bf16 whatever x is (as LoRA's forward).
  auto xa = at::autocast::is_autocast_enabled(x.device().type()) ? x : x.to(lambda.scalar_type());
  if (training && dropout > 0) xa = at::dropout(xa, dropout, true);
  const auto [first, second] = scaled_bases(xa.device(), xa.scalar_type());
  const auto delta = at::linear(at::linear(xa, first), second) * scaling;
  return out + delta.to(out.scalar_type());
}

at::Tensor RandLoraLayer::delta_weight() const {
  const auto [first, second] = scaled_bases(lambda.device(), at::kFloat);
  // HF's (update_B.T @ update_A.T).T with (update_B, update_A) = (first, second).
  return at::matmul(first.t(), second.t()).t() * scaling;
}

void RandLoraLayer::merge() {
  if (merged_) return;
  add_delta_to_host(*host_, delta_weight(), +1);
  merged_ = true;
}

void RandLoraLayer::unmerge() {
  if (!merged_) return;
  add_delta_to_host(*host_, delta_weight(), -1);
  merged_ = false;
}

}  // namespace peft
