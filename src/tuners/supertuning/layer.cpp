// SupertuningLayer: HF PEFT 0.21's supertuning.Linear (forward, get_delta_weight, merge,
// unmerge): the sparse values scattered into a dense [out, in] delta, plus Supra's LoRA term.
#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <c10/core/GradMode.h>

#include <stdexcept>

#include "peft/supertuning.h"
#include "tuners/delta_merge.h"

namespace peft {

SupertuningLayer::SupertuningLayer(AdaptableLayer* host, at::Tensor indices_, std::string indices_key,
                                   int64_t rank_, double lora_alpha, double dropout_)
    : LayerAdapter(host),
      indices(std::move(indices_)),
      rank(rank_),
      scaling(rank_ > 0 ? lora_alpha / static_cast<double>(rank_) : 0.0),
      dropout(dropout_),
      indices_key_(std::move(indices_key)) {
  const int64_t n = indices.size(0), in = host->input_dim(), out = host->output_dim();
  values = at::zeros({n}, at::kFloat);
  register_parameter("supertuning_values", &values, {n});
  if (rank > 0) {
    lora_A = at::zeros({rank, in}, at::kFloat);
    lora_B = at::zeros({out, rank}, at::kFloat);
    register_parameter("supertuning_lora_A.weight", &lora_A, {rank, in});
    register_parameter("supertuning_lora_B.weight", &lora_B, {out, rank});
  }
}

std::vector<at::Tensor*> SupertuningLayer::trainable_slots() {
  if (rank > 0) return {&values, &lora_A, &lora_B};
  return {&values};
}

std::vector<LayerAdapter::SharedSlot> SupertuningLayer::shared_slots() {
  if (!files_indices()) return {};  // chosen again from the base weight at load (HF's non-persistent buffer)
  return {{indices_key_, &indices}};
}

at::Tensor SupertuningLayer::flat_positions(at::Device device) const {
  std::lock_guard<std::mutex> lock(positions_mutex_);
  if (!checked_.defined() || !checked_.is_same(indices) || positions_.device() != device) {
    const auto idx = indices.to(at::kCPU, at::kLong);
    const int64_t numel = host_->output_dim() * host_->input_dim();
    const std::string what = files_indices() ? "'" + indices_key_ + "'" : "the indices";
    if (idx.dim() != 1 || idx.size(0) != values.size(0))
      throw std::runtime_error("SUPERTUNING: " + what + " must be [" + std::to_string(values.size(0)) + "]");
    if (idx.numel() > 0 && (idx.min().item<int64_t>() < 0 || idx.max().item<int64_t>() >= numel))
      throw std::runtime_error("SUPERTUNING: " + what + " has positions outside the weight's " +
                               std::to_string(numel) + " entries");
    positions_ = idx.to(device);
    checked_ = indices;
  }
  return positions_;
}

at::Tensor SupertuningLayer::sparse_delta() const {
  const int64_t out = host_->output_dim(), in = host_->input_dim();
  // HF's scatter_add onto a zero weight: a repeated position adds up.
  return at::zeros({out * in}, values.options().dtype(at::kFloat))
      .scatter_add(0, flat_positions(values.device()), values.to(at::kFloat))
      .view({out, in});
}

at::Tensor SupertuningLayer::delta_weight() const {
  auto d = sparse_delta();
  if (rank > 0) d = d + at::matmul(lora_B.to(at::kFloat), lora_A.to(at::kFloat)) * scaling;
  return d;
}

at::Tensor SupertuningLayer::forward(const at::Tensor& x, const at::Tensor& out) {
  // HF computes x (W + sparse)ᵀ + b, then adds the LoRA term; x sparseᵀ added to the base
  // output is the same sum.
  auto xa = at::autocast::is_autocast_enabled(x.device().type()) ? x : x.to(at::kFloat);
  auto h = at::linear(xa, sparse_delta().to(xa.scalar_type()));
  if (rank > 0) {
    const auto xd = training && dropout > 0 ? at::dropout(xa, dropout, true) : xa;
    h = h + at::linear(at::linear(xd, lora_A.to(xa.scalar_type())), lora_B.to(xa.scalar_type())) * scaling;
  }
  return out + h.to(out.scalar_type());
}

void SupertuningLayer::merge() {
  if (merged_) return;
  c10::NoGradGuard g;
  add_delta_to_host(*host_, delta_weight(), +1);
  merged_ = true;
}

void SupertuningLayer::unmerge() {
  if (!merged_) return;
  c10::NoGradGuard g;
  add_delta_to_host(*host_, delta_weight(), -1);
  merged_ = false;
}

}  // namespace peft
