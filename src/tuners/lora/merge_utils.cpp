#include "tuners/lora/merge_utils.h"

#include <ATen/ATen.h>

#include <stdexcept>

namespace peft::merge_utils {

namespace {

// weights viewed as [n, 1, 1, ...] to broadcast over the stacked tensors.
at::Tensor reshape_weights(const at::Tensor& stacked, const at::Tensor& weights) {
  std::vector<int64_t> shape = weights.sizes().vec();
  while (static_cast<int64_t>(shape.size()) < stacked.dim()) shape.push_back(1);
  return weights.view(shape);
}

at::Tensor magnitude_based_pruning(const at::Tensor& t, double density) {
  auto mask = at::zeros_like(t).reshape(-1);
  // Python's int(): truncation toward zero.
  const auto k = static_cast<int64_t>(density * static_cast<double>(t.numel()));
  auto top = at::topk(t.abs().reshape(-1), k, /*dim=*/-1, /*largest=*/true);
  mask.index_put_({std::get<1>(top)}, 1);
  return t * mask.reshape(t.sizes());
}

at::Tensor random_pruning(const at::Tensor& t, double density, bool rescale) {
  auto mask = at::bernoulli(at::full_like(t, density));
  auto pruned = t * mask;
  if (rescale) pruned = pruned / density;
  return pruned;
}

// prune(): density >= 1 keeps the tensor as it is (HF warns; the caller warned once).
at::Tensor prune(const at::Tensor& t, double density, bool magnitude, bool rescale = false) {
  if (density >= 1) return t;
  if (density < 0) throw std::invalid_argument("density should be >= 0, got " + std::to_string(density));
  return magnitude ? magnitude_based_pruning(t, density) : random_pruning(t, density, rescale);
}

at::Tensor majority_sign_mask(const at::Tensor& stacked, const std::string& method) {
  auto sign = stacked.sign();
  at::Tensor magnitude;
  if (method == "total") magnitude = stacked.sum(0);
  else if (method == "frequency") magnitude = sign.sum(0);
  else throw std::invalid_argument("majority_sign_method must be total or frequency, got '" + method + "'");
  auto majority = at::where(magnitude >= 0, 1, -1);
  return sign == majority;
}

at::Tensor disjoint_merge(const at::Tensor& weighted, const at::Tensor& mask) {
  auto mixed = (weighted * mask).sum(0);
  auto kept = mask.sum(0);
  return mixed / at::clamp(kept, 1.0);
}

std::vector<at::Tensor> pruned(const std::vector<at::Tensor>& tensors, double density, bool magnitude) {
  std::vector<at::Tensor> out;
  for (const auto& t : tensors) out.push_back(prune(t, density, magnitude, /*rescale=*/!magnitude));
  return out;
}

at::Tensor weighted_sum(const at::Tensor& stacked, const at::Tensor& weights) {
  return (stacked * reshape_weights(stacked, weights)).sum(0);
}

at::Tensor ties_merge(const std::vector<at::Tensor>& sparse, const at::Tensor& weights, const std::string& method) {
  auto stacked = at::stack(sparse, 0);
  auto mask = majority_sign_mask(stacked, method);
  auto weighted = stacked * reshape_weights(stacked, weights);
  return disjoint_merge(weighted, mask);
}

}  // namespace

at::Tensor task_arithmetic(const std::vector<at::Tensor>& tensors, const at::Tensor& weights) {
  return weighted_sum(at::stack(tensors, 0), weights);
}

at::Tensor magnitude_prune(const std::vector<at::Tensor>& tensors, const at::Tensor& weights, double density) {
  return weighted_sum(at::stack(pruned(tensors, density, /*magnitude=*/true), 0), weights);
}

at::Tensor ties(const std::vector<at::Tensor>& tensors, const at::Tensor& weights, double density,
                const std::string& majority_sign_method) {
  return ties_merge(pruned(tensors, density, /*magnitude=*/true), weights, majority_sign_method);
}

at::Tensor dare_linear(const std::vector<at::Tensor>& tensors, const at::Tensor& weights, double density) {
  return weighted_sum(at::stack(pruned(tensors, density, /*magnitude=*/false), 0), weights);
}

at::Tensor dare_ties(const std::vector<at::Tensor>& tensors, const at::Tensor& weights, double density,
                     const std::string& majority_sign_method) {
  return ties_merge(pruned(tensors, density, /*magnitude=*/false), weights, majority_sign_method);
}

}  // namespace peft::merge_utils
