// AdamssLayer: HF PEFT 0.21's adamss.Linear (slice_pca, clustering_Z, the per-subspace QR
// init, the forward, get_delta_weight, get_delta_bias, merge, unmerge).
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <utility>

#include "peft/adamss.h"
#include "tuners/adamss/kmeans.h"
#include "tuners/delta_merge.h"
#include "tuners/lora/svd_lowrank.h"

namespace peft {

AdamssLayer::AdamssLayer(AdaptableLayer* host, const AdamssConfig& c, at::Generator& gen, std::string file_prefix)
    : LayerAdapter(host), file_prefix_(std::move(file_prefix)) {
  c10::NoGradGuard g;
  at::Tensor w = host->dense_weight().detach().to(at::kCPU, at::kFloat);
  if (host->weight_is_in_out()) w = w.t();
  const at::Tensor* bias = host->bias_tensor();
  has_bias = bias && bias->defined();
  if (has_bias) w = at::cat({w, bias->detach().to(at::kCPU, at::kFloat).unsqueeze(1)}, 1);
  w = w.contiguous();
  const int64_t out = w.size(0), cols = w.size(1);
  const int64_t R = std::min({c.r, out, cols});
  // slice_pca: torch.svd_lowrank(q=R, niter=2) under torch.manual_seed(random_seed).
  auto pca_gen = at::detail::createCPUGenerator(c.random_seed);
  auto [U, S, V] = svd_lowrank(w, R, 2, pca_gen);
  const auto UU = U.narrow(1, 0, R).contiguous();       // [out, R]
  newB = V.narrow(1, 0, R).t().contiguous();             // [R, cols]
  // clustering_Z: sklearn's KMeans of UU's rows.
  const int64_t K = std::min(c.num_subspaces, out);
  const auto labels = sklearn_kmeans_random(UU, K, 10, 123456789u);
  // seg_locations: as many groups as the largest label + 1; K of them are trained.
  int64_t max_label = 0;
  for (auto l : labels) max_label = std::max(max_label, l);
  groups.assign(std::max(max_label + 1, K), {});
  for (int64_t i = 0; i < out; ++i) groups[labels[i]].push_back(i);
  groups.resize(K);
  const auto f32 = at::TensorOptions(at::kFloat);
  std::vector<int64_t> order;
  A.resize(K);
  B.resize(K);
  for (int64_t i = 0; i < K; ++i) {
    const auto& seg = groups[i];
    const int64_t L = static_cast<int64_t>(seg.size());
    order.insert(order.end(), seg.begin(), seg.end());
    const auto idx = at::tensor(seg, at::TensorOptions(at::kLong));
    const auto sub = UU.index_select(0, idx);  // [L, R]
    const auto Z = at::mm(sub, sub.t());       // [L, L]
    int64_t rank;
    if (c.use_dynamic_rank) {
      auto [Ur, Sr, Vr] = svd_lowrank(Z, L, 2, gen);
      const double s0 = Sr[0].item<double>();
      const int64_t above = (Sr > c.svd_threshold * s0).sum().item<int64_t>();
      rank = std::min({above, c.subspace_rank, Sr.size(0)});
    } else {
      rank = std::min(L, c.subspace_rank);
    }
    rank = std::max<int64_t>(rank, 1);
    auto [Ug, Sg, Vg] = svd_lowrank(Z, std::min(L, rank), 2, gen);
    const auto a_mid = Ug.narrow(1, 0, std::min(rank, Ug.size(1)));
    auto [Q, Rq] = at::linalg_qr(at::mm(sub.t(), a_mid), "reduced");
    A[i] = Q.t().contiguous();
    if (c.init_weights)
      B[i] = at::zeros({L, rank}, f32);
    else
      B[i] = at::randn({L, rank}, gen, f32) * 0.01;
  }
  scatter_index = at::tensor(order, at::TensorOptions(at::kLong));
  const auto dev = host->weight_tensor()->device();
  for (int64_t i = 0; i < K; ++i) {
    A[i] = A[i].to(dev);
    B[i] = B[i].to(dev);
    register_parameter("adamss_A." + std::to_string(i), &A[i], {A[i].size(0), A[i].size(1)});
  }
  for (int64_t i = 0; i < K; ++i)
    register_parameter("adamss_B." + std::to_string(i), &B[i], {B[i].size(0), B[i].size(1)});
  newB = newB.to(dev);  // filed through shared_slots
  scatter_index = scatter_index.to(dev);
}

std::vector<at::Tensor*> AdamssLayer::trainable_slots() {
  std::vector<at::Tensor*> slots;
  for (auto& a : A) slots.push_back(&a);
  for (auto& b : B) slots.push_back(&b);
  return slots;
}

std::vector<LayerAdapter::SharedSlot> AdamssLayer::shared_slots() { return {{file_prefix_ + "adamss_newB", &newB}}; }

// HF: base(x) + zeros.scatter(-1, scatter_index, cat_i(((x, 1) newBᵀ) A_iᵀ B_iᵀ)); newB and
// the index are not parameters, so they follow the output's device here.
at::Tensor AdamssLayer::forward(const at::Tensor& x, const at::Tensor& out) {
  const auto dev = out.device();
  const auto dtype = x.scalar_type();
  auto h = x;
  if (has_bias) {
    auto shape = x.sizes().vec();
    shape.back() = 1;
    h = at::cat({x, at::ones(shape, x.options())}, -1);
  }
  const auto projected = at::linear(h, newB.to(dev, dtype));  // [..., R]
  std::vector<at::Tensor> chunks;
  chunks.reserve(A.size());
  for (size_t i = 0; i < A.size(); ++i)
    chunks.push_back(at::linear(at::linear(projected, A[i].to(dtype)), B[i].to(dtype)));
  const auto cat = at::cat(chunks, -1);
  auto shape = cat.sizes().vec();
  shape.back() = out.size(-1);
  const auto delta = at::zeros(shape, cat.options()).index_copy(-1, scatter_index.to(dev), cat);
  return out + delta.to(out.scalar_type());
}

at::Tensor AdamssLayer::full_delta() const {
  const auto dev = A.at(0).device();
  const auto nb = newB.to(dev, at::kFloat);
  std::vector<at::Tensor> chunks;
  for (size_t i = 0; i < A.size(); ++i)
    chunks.push_back(at::mm(at::mm(B[i].to(at::kFloat), A[i].to(at::kFloat)), nb));
  const auto cat = at::cat(chunks, 0);
  return at::zeros({cat.size(0), nb.size(1)}, cat.options()).index_copy(0, scatter_index.to(dev), cat);
}

at::Tensor AdamssLayer::delta_weight() const {
  const auto full = full_delta();
  return has_bias ? full.narrow(1, 0, full.size(1) - 1) : full;
}

at::Tensor AdamssLayer::delta_bias() const {
  const auto full = full_delta();
  return has_bias ? full.select(1, full.size(1) - 1) : at::zeros({full.size(0)}, full.options());
}

void AdamssLayer::merge() {
  if (merged_) return;
  add_delta_to_host(*host_, delta_weight(), +1);
  if (has_bias) {
    c10::NoGradGuard g;
    at::Tensor* b = host_->bias_tensor();
    b->add_(delta_bias().to(b->device(), b->scalar_type()));
  }
  merged_ = true;
}

void AdamssLayer::unmerge() {
  if (!merged_) return;
  add_delta_to_host(*host_, delta_weight(), -1);
  if (has_bias) {
    c10::NoGradGuard g;
    at::Tensor* b = host_->bias_tensor();
    b->sub_(delta_bias().to(b->device(), b->scalar_type()));
  }
  merged_ = false;
}

}  // namespace peft
