#include "train/precision.h"

#include <ATen/Context.h>
#include <ATen/core/Tensor.h>

#include <atomic>
#include <cstdlib>
#include <iostream>
#include <map>

#include "peft/adaptable.h"
#include "peft/model.h"
#include "util/cpu_features.h"
#include "util/parallel_for.h"

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
  // Every layer holding each weight (a tied lm_head shares the embedding's): a weight is
  // converted only where every holder agrees, and then once, so a tied pair keeps sharing
  // one table. Embeddings remember the dtype they computed in, so their lookups still feed
  // the residual stream at full width (only the stored values are rounded).
  struct Holders {
    std::vector<AdaptableLayer*> layers;
    bool ok = true;
  };
  std::map<const void*, Holders> by_weight;
  for (auto& [name, m] : model.named_modules()) {
    auto* layer = dynamic_cast<AdaptableLayer*>(m);
    if (!layer) continue;
    at::Tensor* w = layer->weight_tensor();
    if (!w || !w->defined() || !w->is_floating_point()) continue;
    const LayerKind kind = layer->kind();
    if (kind != LayerKind::kLinear && kind != LayerKind::kEmbedding) continue;
    auto& h = by_weight[w->unsafeGetTensorImpl()];
    h.layers.push_back(layer);
    if (!plain_frozen(*layer, *w)) h.ok = false;
    if (kind == LayerKind::kEmbedding && !layer->adapter_names().empty()) h.ok = false;
  }
  int64_t converted = 0;
  for (auto& [_, h] : by_weight) {
    const at::ScalarType was = h.layers.front()->weight_tensor()->scalar_type();
    if (!h.ok || was == dtype) continue;
    const at::Tensor low = h.layers.front()->weight_tensor()->to(dtype);
    for (AdaptableLayer* l : h.layers) {
      *l->weight_tensor() = low;
      if (l->kind() == LayerKind::kEmbedding) l->compute_dtype = was;
    }
    converted += low.numel();
  }
  return converted;
}

std::string effective_precision(const std::string& requested, bool on_cpu) {
  if (requested != "bf16" || !on_cpu || cpu_bf16_matmul_wanted()) return requested;
  static std::atomic<bool> told{false};
  if (!told.exchange(true))
    std::cerr << "precision=bf16: this CPU has no AVX-512, so LibTorch's bf16 matrix products would take its "
                 "reference path (about 100x slower than fp32 here); computing in fp32 instead\n";
  return "fp32";
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
