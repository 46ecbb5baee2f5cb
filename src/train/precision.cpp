#include "train/precision.h"

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>

#include <atomic>

#include <map>

#include "peft/adaptable.h"
#include "peft/model.h"

namespace peft {
namespace {

// A layer whose weight may be stored at lower precision: nothing trains it and no
// adapter on it reads it.
bool plain_frozen(const AdaptableLayer& l, const at::Tensor& w) {
  if (w.requires_grad()) return false;
  for (const auto& name : l.adapter_names())
    if (l.adapter(name)->reads_host_weight()) return false;
  return true;
}

}  // namespace

int64_t store_frozen_weights(Model& model, at::ScalarType dtype) {
  // Every layer holding each weight (a tied lm_head shares the embedding's); a weight is
  // converted only where every holder agrees. The embedding itself keeps its weight, so a
  // tied lm_head gets its own bf16 copy and lookups stay exact.
  struct Holders {
    std::vector<at::Tensor*> slots;
    bool ok = true;
  };
  std::map<const void*, Holders> by_weight;
  for (auto& [name, m] : model.named_modules()) {
    auto* layer = dynamic_cast<AdaptableLayer*>(m);
    if (!layer) continue;
    at::Tensor* w = layer->weight_tensor();
    if (!w || !w->defined() || !w->is_floating_point()) continue;
    auto& h = by_weight[w->unsafeGetTensorImpl()];
    const bool matmul = layer->kind() == LayerKind::kLinear;
    if (matmul) h.slots.push_back(w);
    if (!plain_frozen(*layer, *w)) h.ok = false;
    if (!matmul && !layer->adapter_names().empty()) h.ok = false;
  }
  int64_t converted = 0;
  for (auto& [_, h] : by_weight) {
    if (!h.ok || h.slots.empty() || h.slots.front()->scalar_type() == dtype) continue;
    const at::Tensor low = h.slots.front()->to(dtype);
    for (at::Tensor* s : h.slots) *s = low;
    converted += low.numel();
  }
  return converted;
}

bool flush_denormals() {
  // The mode is per thread: set it on each of ATen's intra-op threads as well (a range of
  // one index per thread gives every thread of the pool one call).
  std::atomic<bool> ok{at::globalContext().setFlushDenormal(true)};
  const int64_t n = at::get_num_threads();
  at::parallel_for(0, n, 1, [&](int64_t, int64_t) {
    if (!at::globalContext().setFlushDenormal(true)) ok = false;
  });
  return ok;
}

}  // namespace peft
