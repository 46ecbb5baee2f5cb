// TrainableTokensLayer: HF PEFT's TrainableTokensLayer (forward as if the rows were copied
// into the weight, merge by copying them in, unmerge by copying the originals back).
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <utility>

#include "peft/trainable_tokens.h"

namespace peft {

TrainableTokensLayer::TrainableTokensLayer(AdaptableLayer* host, std::shared_ptr<TokenRows> rows_,
                                           bool owner_, const std::string& key)
    : LayerAdapter(host), rows(std::move(rows_)), owner(owner_) {
  if (!key.empty()) register_parameter(key, &rows->delta, rows->delta.sizes().vec());
}

std::vector<at::Tensor*> TrainableTokensLayer::trainable_slots() {
  // A tied layer's rows train through the embedding's adapter.
  return owner ? std::vector<at::Tensor*>{&rows->delta} : std::vector<at::Tensor*>{};
}

at::Tensor TrainableTokensLayer::forward(const at::Tensor& x, const at::Tensor& out) {
  return host_->kind() == LayerKind::kEmbedding ? embedding_forward(x, out) : head_forward(x, out);
}

at::Tensor TrainableTokensLayer::embedding_forward(const at::Tensor& ids, const at::Tensor& out) {
  at::Tensor* w = host_->weight_tensor();
  if (!position_.defined() || position_.device() != ids.device()) {
    auto pos = at::full({w->size(0)}, -1, at::TensorOptions(at::kLong));
    pos.index_put_({rows->index.cpu()}, at::arange(rows->index.numel(), at::kLong));
    position_ = pos.to(ids.device());
  }
  const at::Tensor pos = position_.index_select(0, ids.reshape({-1})).view(ids.sizes());
  // The rows go through the host's own lookup, so that what it does beyond the table
  // (Gemma's sqrt(hidden) scale, the compute dtype) applies to them as HF applies it to
  // the copied-in rows: the table is the rows (cast as HF casts them, to the weight's
  // dtype), and ids become row positions. The shared weight is not touched, so
  // concurrent forwards are safe.
  const at::Tensor replaced =
      host_->forward_with_weight(pos.clamp_min(0), rows->delta.to(w->device(), w->scalar_type()));
  return at::where((pos >= 0).unsqueeze(-1), replaced.to(out.scalar_type()), out);
}

at::Tensor TrainableTokensLayer::head_forward(const at::Tensor& x, const at::Tensor& out) {
  // The output columns of the chosen tokens: x times their rows (HF's F.linear over the
  // weight with the rows copied in; the head has no bias).
  const at::Tensor* w = host_->weight_tensor();
  const at::Tensor cols = at::linear(x, rows->delta.to(w->device(), w->scalar_type()));
  return out.index_copy(-1, rows->index.to(out.device()), cols.to(out.scalar_type()));
}

void TrainableTokensLayer::merge() {
  if (merged_) return;
  c10::NoGradGuard g;
  at::Tensor* w = host_->weight_tensor();
  w->index_copy_(0, rows->index.to(w->device()), rows->delta.to(w->device(), w->scalar_type()));
  merged_ = true;
}

void TrainableTokensLayer::unmerge() {
  if (!merged_) return;
  c10::NoGradGuard g;
  at::Tensor* w = host_->weight_tensor();
  w->index_copy_(0, rows->index.to(w->device()), rows->original.to(w->device(), w->scalar_type()));
  merged_ = false;
}

}  // namespace peft
