#include "train/lm_loss.h"

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>

#include "models/checkpoint.h"
#include "models/fused_ops.h"
#include "peft/adaptable.h"
#include "util/autocast.h"

namespace peft {
namespace {

// The dtype the head's products run in: autocast's, else the hidden states'.
at::ScalarType compute_dtype(const at::Tensor& h) {
  const auto dev = h.device().type();
  return at::autocast::is_autocast_enabled(dev) ? at::autocast::get_autocast_dtype(dev) : h.scalar_type();
}

// bf16 logits on CPU: a fused row kernel instead of ATen's fp32 passes over [rows, vocab]
// (a cast, logsumexp's two, a gather, the softmax's two, a scatter and a cast back).
bool bf16_rows(const at::Tensor& h) { return h.device().is_cpu() && compute_dtype(h) == at::kBFloat16; }

// loss = sum_i logsumexp(h_i W^T) - (h_i W^T)[t_i]; d loss / d h_i = (softmax_i - onehot_i) W,
// computed in forward chunk by chunk; W gets no gradient.
struct FusedLinearCrossEntropy : public torch::autograd::Function<FusedLinearCrossEntropy> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& h, const at::Tensor& weight,
                            const at::Tensor& targets, int64_t rows, bool want_grad) {
    const auto dt = compute_dtype(h);
    const at::Tensor w = weight.to(dt), hc = h.to(dt);
    at::Tensor grad_h = want_grad ? at::empty_like(h) : at::Tensor();
    at::Tensor loss = at::zeros({}, h.options().dtype(at::kFloat));
    AutocastGuard off(h.device().type(), false, at::autocast::get_autocast_dtype(h.device().type()));  // explicit dtypes
    for (int64_t r0 = 0; r0 < h.size(0); r0 += rows) {
      const int64_t n = std::min(rows, h.size(0) - r0);
      if (bf16_rows(hc)) {
        at::Tensor logits = at::mm(hc.narrow(0, r0, n), w.t());  // [n, vocab] bf16, contiguous
        loss.add_(fused::cross_entropy_bf16_(logits, targets.narrow(0, r0, n), want_grad).sum());
        if (want_grad) grad_h.narrow(0, r0, n).copy_(at::mm(logits, w));  // logits now hold the gradient
        continue;
      }
      const at::Tensor t = targets.narrow(0, r0, n).unsqueeze(1);
      at::Tensor logits = at::mm(hc.narrow(0, r0, n), w.t()).to(at::kFloat);
      const at::Tensor lse = at::logsumexp(logits, 1, true);
      loss.add_((lse - logits.gather(1, t)).sum());
      if (!want_grad) continue;
      logits.sub_(lse).exp_();  // softmax, in place
      logits.scatter_add_(1, t, at::full_like(t, -1, logits.options()));
      grad_h.narrow(0, r0, n).copy_(at::mm(logits.to(dt), w));
    }
    ctx->save_for_backward({grad_h});
    return loss;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    const at::Tensor grad_h = ctx->get_saved_variables()[0];
    return {grad_h * grad_out[0].to(grad_h.scalar_type()), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// A head that is just x W^T: no adapter, no bias, nothing of it trains.
bool plain_frozen_head(AdaptableLayer& head) {
  at::Tensor* w = head.weight_tensor();
  at::Tensor* b = head.bias_tensor();
  return head.kind() == LayerKind::kLinear && !head.weight_is_in_out() && w && w->defined() && !w->requires_grad() &&
         w->dim() == 2 && (!b || !b->defined()) && (head.adapters_disabled || head.active.empty());
}

// About 2^24 fp32 logits (64 MB) per chunk, 4x the rows for the bf16 row kernel (the same
// bytes, see lm_loss.h), but never fewer than 256 rows: the head's products lose ~15% of
// their rate below ~250 rows (fp32, a 2048 x 128k head: 136 GFLOP/s at 130 rows, 158 at
// 254 and 508), which 2^24 / 128k would give. 256 rows of fp32 logits are 128-156 MB at
// 128-152k, still a fraction of the unchunked [tokens, vocab].
int64_t default_chunk_rows(int64_t vocab, bool bf16_kernel) {
  const int64_t rows = (int64_t{1} << 24) / std::max<int64_t>(1, vocab);
  return std::max<int64_t>(256, bf16_kernel ? 4 * rows : rows);
}

}  // namespace

at::Tensor causal_lm_loss_sum(AdaptableLayer& head, const at::Tensor& hidden, const at::Tensor& labels,
                              int64_t chunk_rows) {
  const int64_t dim = hidden.size(-1), seq = hidden.size(1);
  at::Tensor h = hidden.narrow(1, 0, seq - 1).reshape({-1, dim});
  at::Tensor t = labels.to(hidden.device()).narrow(1, 1, seq - 1).reshape({-1});
  const at::Tensor keep = (t != -100).nonzero().squeeze(1);
  if (keep.numel() == 0) return hidden.sum().to(at::kFloat) * 0;  // no labelled token: zero, still in the graph
  if (keep.numel() < t.numel()) {
    h = h.index_select(0, keep);
    t = t.index_select(0, keep);
  }
  const int64_t vocab = head.output_dim();
  if (plain_frozen_head(head)) {
    return FusedLinearCrossEntropy::apply(h, *head.weight_tensor(), t,
                                          chunk_rows > 0 ? chunk_rows : default_chunk_rows(vocab, bf16_rows(h)),
                                          at::GradMode::is_enabled() && h.requires_grad());
  }
  const int64_t rows = chunk_rows > 0 ? chunk_rows : default_chunk_rows(vocab, false);
  at::Tensor total = at::zeros({}, hidden.options().dtype(at::kFloat));
  for (int64_t r0 = 0; r0 < h.size(0); r0 += rows) {
    const int64_t n = std::min(rows, h.size(0) - r0);
    const at::Tensor tc = t.narrow(0, r0, n);
    total = total + checkpointed(
                        [&head, tc](const at::Tensor& x) {
                          return at::cross_entropy_loss(head.forward(x).to(at::kFloat), tc, {}, at::Reduction::Sum);
                        },
                        h.narrow(0, r0, n));
  }
  return total;
}

}  // namespace peft
