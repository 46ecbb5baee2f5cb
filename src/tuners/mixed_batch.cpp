// Mixed-adapter batches: each row of a batch with its own adapter (serving).
#include <ATen/ATen.h>

#include <stdexcept>

#include "peft/adaptable.h"

namespace peft {

namespace {
thread_local const MixedBatch* current_mixed_batch = nullptr;

struct Routed {
  const MixedBatch::Group* group;
  LayerAdapter* adapter;
};

// The factors of several plain LoRA adapters, padded to the largest rank, one copy per
// row of their groups.
MixedBatch::GatheredLowRank gather_low_rank(const at::Tensor& x, int64_t outf, const std::vector<Routed>& on) {
  int64_t rank = 0;
  std::vector<LayerAdapter::LowRank> f;
  for (const auto& r : on) {
    f.push_back(*r.adapter->low_rank());
    rank = std::max(rank, f.back().A.size(0));
  }
  const int64_t in = x.size(-1), g = static_cast<int64_t>(on.size());
  auto opts = x.options();
  auto A = at::zeros({g, rank, in}, opts), B = at::zeros({g, outf, rank}, opts);
  std::vector<at::Tensor> rows, slots;
  for (int64_t i = 0; i < g; ++i) {
    const int64_t r = f[i].A.size(0);
    A[i].narrow(0, 0, r).copy_(f[i].A);
    B[i].narrow(1, 0, r).copy_(f[i].B * f[i].scale);
    rows.push_back(on[i].group->rows);
    slots.push_back(at::full({on[i].group->count}, i, rows.back().options()));
  }
  auto slot = at::cat(slots);
  return {at::cat(rows), A.index_select(0, slot).transpose(1, 2).contiguous(),
          B.index_select(0, slot).transpose(1, 2).contiguous()};
}

// All plain LoRA adapters of a layer at once: one gathered shrink (x A^T) and one gathered
// expand (. B^T s) over their rows, added to the base output.
at::Tensor add_low_rank(const AdaptableLayer* layer, const MixedBatch& m, const at::Tensor& x, const at::Tensor& out,
                        const std::vector<Routed>& on) {
  auto* g = m.gathered(layer);
  if (!g || g->a_t.scalar_type() != x.scalar_type()) {
    m.store(layer, gather_low_rank(x, out.size(-1), on));
    g = m.gathered(layer);
  }
  auto xs = x.index_select(0, g->rows);
  auto h = at::bmm(xs.reshape({xs.size(0), -1, x.size(-1)}), g->a_t);  // [n, s, r]
  auto d = at::bmm(h, g->b_t);                                          // [n, s, out]
  auto sizes = xs.sizes().vec();
  sizes.back() = out.size(-1);
  return out.index_add(0, g->rows, d.reshape(sizes).to(out.scalar_type()));
}
}  // namespace

MixedBatch::MixedBatch(const std::vector<std::string>& row_adapters, at::Device device)
    : batch_(static_cast<int64_t>(row_adapters.size())) {
  std::vector<std::vector<int64_t>> rows;
  for (int64_t i = 0; i < batch_; ++i) {
    size_t g = 0;
    while (g < groups_.size() && groups_[g].adapter != row_adapters[i]) ++g;
    if (g == groups_.size()) {
      groups_.push_back({row_adapters[i], {}, 0});
      rows.emplace_back();
    }
    rows[g].push_back(i);
  }
  for (size_t g = 0; g < groups_.size(); ++g) {
    groups_[g].count = static_cast<int64_t>(rows[g].size());
    groups_[g].rows = at::tensor(rows[g], at::kLong).to(device);
  }
}

MixedBatch::Scope::Scope(const MixedBatch* m) : prev_(current_mixed_batch) { current_mixed_batch = m; }
MixedBatch::Scope::~Scope() { current_mixed_batch = prev_; }
const MixedBatch* MixedBatch::current() { return current_mixed_batch; }

MixedBatch::GatheredLowRank* MixedBatch::gathered(const AdaptableLayer* layer) const {
  auto it = gathered_.find(layer);
  return it == gathered_.end() ? nullptr : &it->second;
}

void MixedBatch::store(const AdaptableLayer* layer, GatheredLowRank g) const { gathered_[layer] = std::move(g); }

at::Tensor AdaptableLayer::mixed_forward(const at::Tensor& x, const MixedBatch& m) {
  std::vector<Routed> on, low_rank;
  for (const auto& g : m.groups())
    if (LayerAdapter* a = g.adapter.empty() ? nullptr : adapter(g.adapter)) on.push_back({&g, a});
  // A layer none of the rows adapts runs whatever its input (BART's position table takes
  // positions [t], T5's relative bias buckets [q, k]).
  if (on.empty()) return base_forward(x);
  if (x.dim() == 0 || x.size(0) != m.batch())
    throw std::logic_error("a mixed-adapter batch of " + std::to_string(m.batch()) + " rows reached a " + type_name() +
                           " with input " + c10::str(x.sizes()));
  if (on.size() == 1 && on[0].group->count == m.batch()) {  // every row, one adapter
    at::Tensor in = on[0].adapter->transform_input(x);
    return on[0].adapter->forward(in, base_forward(in));
  }
  at::Tensor out = base_forward(x);
  for (const auto& [g, a] : on) {
    if (a->low_rank() && !a->transforms_input()) {
      low_rank.push_back({g, a});
      continue;
    }
    at::Tensor xg = x.index_select(0, g->rows), og;
    if (a->transforms_input()) {
      at::Tensor in = a->transform_input(xg);
      og = a->forward(in, base_forward(in));
    } else {
      og = a->forward(xg, out.index_select(0, g->rows));
    }
    out = out.index_copy(0, g->rows, og);
  }
  if (low_rank.size() == 1) {
    const auto& [g, a] = low_rank[0];
    out = out.index_copy(0, g->rows, a->forward(x.index_select(0, g->rows), out.index_select(0, g->rows)));
  } else if (!low_rank.empty()) {
    out = add_low_rank(this, m, x, out, low_rank);
  }
  return out;
}

}  // namespace peft
