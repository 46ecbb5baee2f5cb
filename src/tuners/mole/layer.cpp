// MoleLayer: the router, the gated sum of the experts' low-rank deltas, and the router's
// load-balancing loss. All experts run as one stacked shrink and one expand (their ranks
// concatenated), weighted per token by the gates; no loop over tokens.
#include <ATen/ATen.h>

#include <c10/core/GradMode.h>

#include <bit>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <utility>

#include "peft/mole.h"

namespace peft {

MoleLayer::MoleLayer(AdaptableLayer* host, const MoleConfig& cfg, std::vector<Factors> fs)
    : LayerAdapter(host),
      experts(std::move(fs)),
      top_k_(cfg.top_k),
      aux_coef_(cfg.router_aux_loss_coef),
      trainable_experts_(cfg.trainable_experts) {
  const int64_t n = static_cast<int64_t>(experts.size()), in = host->input_dim();
  router = at::zeros({n, in}, at::kFloat);
  register_parameter("mole_router.weight", &router, {n, in});
  // Embedded experts are part of this adapter's file; referenced ones live in their folders.
  if (cfg.embedded())
    for (auto& e : experts)
      if (e.A.defined()) {
        register_parameter("mole_experts." + e.name + ".lora_A.weight", &e.A, e.A.sizes().vec());
        register_parameter("mole_experts." + e.name + ".lora_B.weight", &e.B, e.B.sizes().vec());
      }
}

at::Tensor MoleLayer::router_logits(const at::Tensor& x) const {
  return at::matmul(x.to(router.scalar_type()), router.t());
}

at::Tensor MoleLayer::gates(const at::Tensor& logits) const {
  auto probs = at::softmax(logits.to(at::kFloat), -1);
  if (top_k_ >= probs.size(-1)) return probs;  // dense
  auto [top, idx] = at::topk(probs, top_k_, -1);
  top = top / top.sum(-1, true);  // Mixtral: renormalize over the selected experts
  return at::zeros_like(probs).scatter(-1, idx, top);
}

at::Tensor MoleLayer::balance_loss(const at::Tensor& logits, int64_t top_k) {
  const int64_t n = logits.size(-1);
  auto probs = at::softmax(logits.reshape({-1, n}).to(at::kFloat), -1);
  const double tokens = static_cast<double>(probs.size(0));
  auto picked = std::get<1>(at::topk(probs, top_k, -1)).reshape({-1});
  // Fraction of tokens sent to each expert (counted over the top-k picks) times the mean
  // router probability of each expert, times n: top_k when balanced.
  auto counts = at::zeros({n}, probs.options()).index_add(0, picked, at::ones(picked.sizes(), probs.options()));
  return (counts / tokens * probs.mean(0)).sum() * static_cast<double>(n);
}

MoleLayer::Stacked MoleLayer::stack_experts(const at::Device& device) const {
  Stacked s;
  std::vector<at::Tensor> as, bs, cols;
  std::vector<double> scale;
  for (size_t i = 0; i < experts.size(); ++i) {
    const auto& e = experts[i];
    if (!e.A.defined() || e.A.size(0) == 0) continue;
    as.push_back(e.A);
    bs.push_back(e.B);
    cols.push_back(at::full({e.A.size(0)}, static_cast<int64_t>(i), at::TensorOptions(at::kLong).device(device)));
    scale.insert(scale.end(), static_cast<size_t>(e.A.size(0)), e.scaling);
  }
  if (as.empty()) return s;
  s.a = at::cat(as, 0);
  s.b = at::cat(bs, 1);
  s.expert = at::cat(cols);
  s.scale = at::tensor(scale, at::TensorOptions(at::kDouble)).to(at::kFloat).to(device);
  return s;
}

namespace {
// A tensor's in-place version; inference tensors (made under InferenceMode) keep none.
int64_t version(const at::Tensor& t) { return t.is_inference() ? -1 : t._version(); }
}  // namespace

std::shared_ptr<const MoleLayer::Stacked> MoleLayer::stacked(const at::Device& device) {
  bool grad = false;
  std::vector<std::pair<const void*, int64_t>> key;
  for (const auto& e : experts) {
    if (!e.A.defined() || e.A.size(0) == 0) continue;
    grad = grad || e.A.requires_grad() || e.B.requires_grad();
    key.emplace_back(e.A.unsafeGetTensorImpl(), version(e.A));
    key.emplace_back(e.B.unsafeGetTensorImpl(), version(e.B));
    key.emplace_back(nullptr, std::bit_cast<int64_t>(e.scaling));
  }
  // A cached cat would carry one step's autograd graph into the next.
  if (grad && at::GradMode::is_enabled()) return std::make_shared<const Stacked>(stack_experts(device));
  std::lock_guard<std::mutex> lock(stacked_mutex_);
  if (!stacked_ || stacked_->key != key || (stacked_->scale.defined() && stacked_->scale.device() != device)) {
    auto s = stack_experts(device);
    s.key = std::move(key);
    stacked_ = std::make_shared<const Stacked>(std::move(s));
  }
  return stacked_;
}

at::Tensor MoleLayer::forward(const at::Tensor& x, const at::Tensor& out) {
  const auto logits = router_logits(x);
  const auto g = gates(logits);  // [..., n]
  aux_ = aux_coef_ > 0 ? aux_coef_ * balance_loss(logits, top_k_) : at::Tensor();
  const auto stack = stacked(x.device());
  const Stacked& s = *stack;
  if (!s.a.defined()) return out;
  // Each rank column of the stacked factors belongs to one expert: weight it by that
  // expert's gate and scaling.
  const auto w = g.index_select(-1, s.expert) * s.scale;
  const auto h = at::matmul(x.to(s.a.scalar_type()), s.a.t()) * w;
  return out + at::matmul(h, s.b.t()).to(out.scalar_type());
}

void MoleLayer::merge() {
  throw std::logic_error("MOLE adapters cannot be merged: the mixture of experts depends on each token");
}

std::vector<at::Tensor*> MoleLayer::trainable_slots() {
  std::vector<at::Tensor*> out{&router};
  if (trainable_experts_)
    for (auto& e : experts)
      if (e.A.defined()) {
        out.push_back(&e.A);
        out.push_back(&e.B);
      }
  return out;
}

}  // namespace peft
