// VBLoRALayer: forward, merge and unmerge as HF PEFT's vblora.Linear computes them.
#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>

#include <stdexcept>

#include "peft/layers.h"
#include "peft/vblora.h"
#include "tuners/delta_merge.h"

namespace peft {

namespace {

// HF's _get_low_rank_matrix: each piece is the softmax over its top-k logits times the
// bank vectors they index, summed. logits [..., nv] -> [..., vector_length].
at::Tensor mix_bank(const at::Tensor& logits, const at::Tensor& bank, int64_t topk) {
  auto [top, index] = logits.topk(topk, -1);
  const auto weights = at::softmax(top, -1);
  return (weights.unsqueeze(-1) * at::embedding(bank, index)).sum(-2);
}

}  // namespace

VBLoRALayer::VBLoRALayer(AdaptableLayer* host, std::shared_ptr<VBLoRABank> bank, int64_t r, int64_t num_vectors,
                         int64_t vector_length, int64_t topk_, double dropout_)
    : LayerAdapter(host), topk(topk_), dropout(dropout_), bank_(std::move(bank)) {
  const int64_t in_tiles = host->input_dim() / vector_length, out_tiles = host->output_dim() / vector_length;
  logits_A = at::zeros({r, in_tiles, num_vectors}, at::kFloat);
  logits_B = at::zeros({out_tiles, r, num_vectors}, at::kFloat);
  register_parameter("vblora_logits_A", &logits_A, {r, in_tiles, num_vectors});
  register_parameter("vblora_logits_B", &logits_B, {out_tiles, r, num_vectors});
  // Every layer registers the one bank tensor: the model's parameters list it once (as
  // HF's shared ParameterDict); VBLoRAConfig files it once as base_model.vblora_vector_bank.
  register_parameter("vblora_vector_bank", &bank_->vectors, {num_vectors, vector_length});
}

std::pair<at::Tensor, at::Tensor> VBLoRALayer::lora_matrices(bool fp32) const {
  // An adapter saved with save_only_topk_weights holds -inf logits outside the top k: the
  // gradient through them is NaN, so HF refuses to train it (it checks the first row).
  if (training && logits_A[0][0].isinf().any().item<bool>())
    throw std::runtime_error(
        "VBLORA: the logits hold -inf: an adapter saved with save_only_topk_weights can be used for inference and "
        "merging, not trained further");
  auto la = logits_A, lb = logits_B, bank = bank_->vectors.to(logits_A.device());
  if (fp32) la = la.to(at::kFloat), lb = lb.to(at::kFloat), bank = bank.to(at::kFloat);
  // A: [r, in/L, L] -> [r, in]; B: [out/L, r, L] -> [out/L, L, r] -> [out, r].
  auto A = mix_bank(la, bank, topk).reshape({la.size(0), -1});
  auto B = mix_bank(lb, bank, topk).transpose(1, 2).reshape({-1, lb.size(1)});
  return {A, B};
}

at::Tensor VBLoRALayer::forward(const at::Tensor& x, const at::Tensor& out) {
  const auto [A, B] = lora_matrices();
  // HF computes on x cast to the bank's dtype; under autocast the products run in bf16.
  auto xa = at::autocast::is_autocast_enabled(x.device().type()) ? x : x.to(bank_->vectors.scalar_type());
  if (training && dropout > 0) xa = at::dropout(xa, dropout, true);
  const auto delta = at::linear(at::linear(xa, A.to(xa.scalar_type())), B.to(xa.scalar_type()));
  return out + delta.to(out.scalar_type());
}

at::Tensor VBLoRALayer::delta_weight() const {
  const auto [A, B] = lora_matrices(/*fp32=*/true);
  return at::matmul(B, A);
}

void VBLoRALayer::merge() {
  if (merged_) return;
  add_delta_to_host(*host_, delta_weight(), +1);
  merged_ = true;
}

void VBLoRALayer::unmerge() {
  if (!merged_) return;
  add_delta_to_host(*host_, delta_weight(), -1);
  merged_ = false;
}

}  // namespace peft
