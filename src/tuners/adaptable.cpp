#include "peft/adaptable.h"

#include "peft/composition.h"

#include <c10/core/GradMode.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <stdexcept>

namespace peft {

at::Tensor AdaptableLayer::dense_weight() {
  at::Tensor* w = weight_tensor();
  return w ? *w : at::Tensor();
}

at::Tensor AdaptableLayer::forward_with_weight(const at::Tensor&, const at::Tensor&) {
  throw std::logic_error(type_name() + " cannot compute with a substituted weight");
}

void AdaptableLayer::assign_weight(const at::Tensor& w) {
  at::Tensor* mine = weight_tensor();
  if (!mine) throw std::logic_error(type_name() + " has no weight to assign");
  c10::NoGradGuard no_grad;
  mine->copy_(w);
}

at::Tensor AdaptableLayer::forward(const at::Tensor& x) {
  if (const MixedBatch* m = MixedBatch::current()) return mixed_forward(x, *m);
  if (composition && !adapters_disabled) return composition->run(*this, x);
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
