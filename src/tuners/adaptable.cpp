#include "peft/adaptable.h"

#include <c10/core/GradMode.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <stdexcept>

namespace peft {

at::Tensor AdaptableLayer::dense_weight() {
  at::Tensor* w = weight_tensor();
  return w ? *w : at::Tensor();
}

void AdaptableLayer::assign_weight(const at::Tensor& w) {
  at::Tensor* mine = weight_tensor();
  if (!mine) throw std::logic_error(type_name() + " has no weight to assign");
  c10::NoGradGuard no_grad;
  mine->copy_(w);
}

at::Tensor AdaptableLayer::forward(const at::Tensor& x) {
  if (const MixedBatch* m = MixedBatch::current()) return mixed_forward(x, *m);
  if (adapters_disabled || active.empty()) return base_forward(x);
  std::vector<LayerAdapter*> on;
  for (const auto& name : active)
    if (LayerAdapter* a = adapter(name); a && !a->merged()) on.push_back(a);
  at::Tensor in = x;
  for (auto* a : on) in = a->transform_input(in);
  at::Tensor out = base_forward(in);
  for (auto* a : on) out = a->forward(in, out);
  return out;
}

at::Tensor AdaptableLayer::mixed_forward(const at::Tensor& x, const MixedBatch& m) {
  if (x.dim() == 0 || x.size(0) != m.batch())
    throw std::logic_error("a mixed-adapter batch of " + std::to_string(m.batch()) + " rows reached a " + type_name() +
                           " with input " + c10::str(x.sizes()));
  std::vector<std::pair<const MixedBatch::Group*, LayerAdapter*>> on;
  for (const auto& g : m.groups())
    if (LayerAdapter* a = g.adapter.empty() ? nullptr : adapter(g.adapter)) on.emplace_back(&g, a);
  if (on.empty()) return base_forward(x);
  if (on.size() == 1 && on[0].first->count == m.batch()) {  // every row, one adapter
    at::Tensor in = on[0].second->transform_input(x);
    return on[0].second->forward(in, base_forward(in));
  }
  at::Tensor out = base_forward(x);
  for (auto& [g, a] : on) {
    at::Tensor xg = x.index_select(0, g->rows), og;
    if (a->transforms_input()) {
      at::Tensor in = a->transform_input(xg);
      og = a->forward(in, base_forward(in));
    } else {
      og = a->forward(xg, out.index_select(0, g->rows));
    }
    out = out.index_copy(0, g->rows, og);
  }
  return out;
}

namespace {
thread_local const MixedBatch* current_mixed_batch = nullptr;
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

void AdaptableLayer::attach(const std::string& name, std::shared_ptr<LayerAdapter> a) {
  if (adapter(name)) throw std::invalid_argument("adapter '" + name + "' is already attached to this " + type_name());
  adapters_.emplace_back(name, a);
  register_module(name, a);
}

void AdaptableLayer::detach(const std::string& name) {
  std::erase_if(adapters_, [&](const auto& p) { return p.first == name; });
  std::erase(active, name);
  remove_module(name);
}

LayerAdapter* AdaptableLayer::adapter(const std::string& name) const {
  for (const auto& [n, a] : adapters_)
    if (n == name) return a.get();
  return nullptr;
}

std::vector<std::string> AdaptableLayer::adapter_names() const {
  std::vector<std::string> out;
  for (const auto& [n, _] : adapters_) out.push_back(n);
  return out;
}

}  // namespace peft
