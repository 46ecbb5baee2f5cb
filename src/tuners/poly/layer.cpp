// PolyLayer: HF PEFT 0.21's poly Linear and PolyRouter.
#include <ATen/ATen.h>

#include <limits>
#include <stdexcept>

#include "peft/poly.h"
#include "peft/task_ids.h"

namespace peft {

PolyLayer::PolyLayer(AdaptableLayer* host, const PolyConfig& c)
    : LayerAdapter(host), r(c.r), n_tasks(c.n_tasks), n_skills(c.n_skills), n_splits(c.n_splits) {
  const int64_t in = host->input_dim() / n_splits, out = host->output_dim() / n_splits;
  lora_A = at::zeros({n_splits, n_skills, in, r}, at::kFloat);
  lora_B = at::zeros({n_splits, n_skills, r, out}, at::kFloat);
  module_logits = at::zeros({n_tasks, n_splits * n_skills}, at::kFloat);
  register_parameter("poly_lora_A", &lora_A, {n_splits, n_skills, in, r});
  register_parameter("poly_lora_B", &lora_B, {n_splits, n_skills, r, out});
  register_parameter("poly_router.module_logits", &module_logits, {n_tasks, n_splits * n_skills});
}

at::Tensor PolyLayer::mixing_weights(const at::Tensor& task_ids) const {
  auto logits = module_logits.index_select(0, task_ids).view({-1, n_splits, n_skills});
  at::Tensor p;
  if (training) {
    // RelaxedBernoulli(temperature 1, logits).rsample(): sigmoid(logits + logistic noise),
    // the uniforms and the result clamped to [eps, 1 - eps] as torch's clamp_probs does.
    const double eps = std::numeric_limits<float>::epsilon();
    const auto u = at::rand(logits.sizes(), logits.options()).clamp(eps, 1 - eps);
    p = at::sigmoid(logits + u.log() - (-u).log1p()).clamp(eps, 1 - eps);
  } else {
    p = at::sigmoid(logits);
  }
  return p / (p.sum(-1, true) + 1e-12);
}

at::Tensor PolyLayer::forward(const at::Tensor& x, const at::Tensor& out) {
  const int64_t b = x.size(0), in = x.size(-1), outf = out.size(-1);
  const auto w = mixing_weights(task_ids_for("POLY", b, n_tasks, module_logits.device()));
  // Each row's mixed factors: A [b, in, r] (the splits' input blocks stacked), B [b, r, out].
  const auto A = at::einsum("bqs,qsdr->bqdr", {w, lora_A}).reshape({b, in, r});
  const auto B = at::einsum("bqs,qsrd->bqrd", {w, lora_B}).transpose(1, 2).reshape({b, r, outf});
  const auto h = at::bmm(at::bmm(x.reshape({b, -1, in}).to(A.scalar_type()), A), B) / static_cast<double>(r);
  return out + h.reshape(out.sizes()).to(out.scalar_type());
}

void PolyLayer::merge() {
  throw std::invalid_argument("POLY adapters cannot be merged: each row's weights depend on its task (as in HF PEFT)");
}

}  // namespace peft
