// ShiraLayer: HF PEFT's shira.Linear (forward, merge, unmerge through the sparse dW).
#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <c10/core/GradMode.h>
#include <c10/core/InferenceMode.h>

#include <stdexcept>

#include "peft/layers.h"
#include "peft/shira.h"
#include "tuners/delta_merge.h"

namespace peft {

at::Tensor row_major_positions(const at::Tensor& sorted_flat, int64_t in) {
  return at::stack({at::div(sorted_flat, in, "floor"), at::remainder(sorted_flat, in)}).to(at::kInt);
}

at::Tensor shira_random_indices(int64_t out, int64_t in, int64_t n, std::optional<uint64_t> seed) {
  // random_mask: torch.Generator() (seeded when random_seed is set), randperm(out * in)[:n]
  // scattered into a mask; torch.where(mask == 1) then lists the positions row-major.
  auto gen = at::detail::createCPUGenerator(seed.value_or(c10::default_rng_seed_val));
  const auto flat = std::get<0>(at::randperm(out * in, gen, at::TensorOptions(at::kLong)).narrow(0, 0, n).sort());
  return row_major_positions(flat, in);
}

ShiraLayer::ShiraLayer(AdaptableLayer* host, at::Tensor indices_, std::string indices_key, std::string method,
                       const std::string& weight_name)
    : LayerAdapter(host), indices(std::move(indices_)), indices_key_(std::move(indices_key)), method_(std::move(method)) {
  const int64_t n = indices.size(1);
  weight = at::zeros({n}, at::kFloat);
  register_parameter(weight_name, &weight, {n});
}

std::pair<at::Tensor, at::Tensor> ShiraLayer::positions(at::Device device) {
  std::lock_guard<std::mutex> lock(positions_mutex_);
  if (!checked_.defined() || !checked_.is_same(indices) || rows_.device() != device) {
    // Normal tensors even when an inference-mode forward fills the cache: a later training
    // forward saves them for index_put's backward, which inference tensors refuse.
    c10::InferenceMode normal_tensors(false);
    const auto idx = indices.to(at::kCPU, at::kLong);
    const int64_t out = host_->output_dim(), in = host_->input_dim();
    if (idx.dim() != 2 || idx.size(0) != 2 || idx.size(1) != weight.size(0))
      throw std::runtime_error(method_ + ": '" + indices_key_ + "' must be [2, " + std::to_string(weight.size(0)) + "]");
    if (idx.numel() > 0 && idx.min().item<int64_t>() < 0)
      throw std::runtime_error(method_ + ": '" + indices_key_ +
                               "' is unknown: mask_type other than 'random' takes the positions from an adapter file");
    if (idx.numel() > 0 && (idx[0].max().item<int64_t>() >= out || idx[1].max().item<int64_t>() >= in))
      throw std::runtime_error(method_ + ": '" + indices_key_ + "' has positions outside the [" + std::to_string(out) +
                               ", " + std::to_string(in) + "] weight");
    rows_ = idx[0].to(device);
    cols_ = idx[1].to(device);
    checked_ = indices;
  }
  return {rows_, cols_};
}

at::Tensor ShiraLayer::delta_weight() {
  const auto [rows, cols] = positions(weight.device());
  // A sparse COO tensor made dense (HF's get_delta_weight): repeated positions add up.
  auto dense = at::zeros({host_->output_dim(), host_->input_dim()}, weight.options().dtype(at::kFloat));
  return dense.index_put({rows, cols}, weight.to(at::kFloat) * scaling, /*accumulate=*/true);
}

at::Tensor ShiraLayer::forward(const at::Tensor& x, const at::Tensor& out) {
  // HF computes x (W + dW)^T + b; x dW^T added to the base output is the same sum (and what
  // HF does beside a quantized weight).
  auto xa = at::autocast::is_autocast_enabled(x.device().type()) ? x : x.to(at::kFloat);
  const auto d = delta_weight();
  return out + at::linear(xa, d.to(xa.scalar_type())).to(out.scalar_type());
}

void ShiraLayer::merge() {
  if (merged_) return;
  c10::NoGradGuard g;
  add_delta_to_host(*host_, delta_weight(), +1);
  merged_ = true;
}

void ShiraLayer::unmerge() {
  if (!merged_) return;
  c10::NoGradGuard g;
  add_delta_to_host(*host_, delta_weight(), -1);
  merged_ = false;
}

bool ShiraLayer::set_scale(double multiplier) {
  // HF's set_scale sets the scale itself; the loaded scale is always 1.
  scaling = multiplier;
  return true;
}

}  // namespace peft
