#include "peft/module.h"

#include <ATen/ATen.h>

#include <functional>
#include <map>
#include <set>

namespace peft {

namespace {
std::string join(const std::string& prefix, const std::string& name) {
  return prefix.empty() ? name : prefix + "." + name;
}
}  // namespace

void Module::register_parameter(const std::string& name, at::Tensor* slot, std::vector<int64_t> shape) {
  slots_.push_back({name, slot, std::move(shape)});
}

void Module::register_buffer(const std::string& name, at::Tensor* slot, std::vector<int64_t> shape) {
  slots_.push_back({name, slot, std::move(shape), /*buffer=*/true});
}

void Module::visit_slots(const std::function<void(const std::string&, ParamSlot&)>& fn, const std::string& prefix) {
  for (auto& s : slots_) fn(join(prefix, s.name), s);
  for (auto& [name, child] : children_) child->visit_slots(fn, join(prefix, name));
}

namespace {
// Defined slots of the kind asked for, depth first; tied tensors once, under their first name.
std::vector<std::pair<std::string, at::Tensor>> named_slots(const Module& root, const std::string& prefix, bool buffers) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  std::set<const void*> seen;
  std::function<void(const Module&, const std::string&)> walk = [&](const Module& m, const std::string& p) {
    for (const auto& s : m.slots()) {
      if (!s.tensor->defined() || s.buffer != buffers) continue;
      if (!seen.insert(s.tensor->unsafeGetTensorImpl()).second) continue;
      out.emplace_back(join(p, s.name), *s.tensor);
    }
    for (const auto& [name, child] : m.children()) walk(*child, join(p, name));
  };
  walk(root, prefix);
  return out;
}
}  // namespace

std::vector<std::pair<std::string, at::Tensor>> Module::named_parameters(const std::string& prefix) const {
  return named_slots(*this, prefix, false);
}

std::vector<std::pair<std::string, at::Tensor>> Module::named_buffers(const std::string& prefix) const {
  return named_slots(*this, prefix, true);
}

std::vector<std::pair<std::string, Module*>> Module::named_modules(const std::string& prefix) {
  std::vector<std::pair<std::string, Module*>> out{{prefix, this}};
  for (auto& [name, child] : children_) {
    auto sub = child->named_modules(join(prefix, name));
    out.insert(out.end(), sub.begin(), sub.end());
  }
  return out;
}

void Module::remove_module(const std::string& name) {
  std::erase_if(children_, [&](const auto& c) { return c.first == name; });
}

Module* Module::find(const std::string& dotted_name) {
  if (dotted_name.empty()) return this;
  const auto dot = dotted_name.find('.');
  const std::string head = dotted_name.substr(0, dot);
  for (auto& [name, child] : children_)
    if (name == head) return dot == std::string::npos ? child.get() : child->find(dotted_name.substr(dot + 1));
  return nullptr;
}

void Module::to(at::ScalarType dtype) {
  // Tied slots share one tensor: convert each distinct tensor once and reassign all.
  std::map<const void*, at::Tensor> done;
  visit_slots([&](const std::string&, ParamSlot& s) {
    if (!s.tensor->defined() || !s.tensor->is_floating_point()) return;
    auto key = s.tensor->unsafeGetTensorImpl();
    auto it = done.find(key);
    if (it == done.end()) it = done.emplace(key, s.tensor->to(dtype)).first;
    *s.tensor = it->second;
  });
}

namespace {
// The first parameter (in named_parameters order) that `want` accepts, found without
// naming every parameter: device() runs in every decoding step, and a model serving a
// thousand adapters has tens of thousands of them.
const at::Tensor* first_parameter(const Module& m, const std::function<bool(const at::Tensor&)>& want) {
  for (const auto& s : m.slots())
    if (s.tensor->defined() && want(*s.tensor)) return s.tensor;
  for (const auto& [name, child] : m.children())
    if (const at::Tensor* t = first_parameter(*child, want)) return t;
  return nullptr;
}
}  // namespace

at::Device Module::device() const {
  const at::Tensor* t = first_parameter(*this, [](const at::Tensor&) { return true; });
  return t ? t->device() : at::Device(at::kCPU);
}

at::ScalarType Module::dtype() const {
  const at::Tensor* t = first_parameter(*this, [](const at::Tensor& x) { return x.is_floating_point(); });
  return t ? t->scalar_type() : at::kFloat;
}

void Module::to(at::Device device) {
  std::map<const void*, at::Tensor> done;
  visit_slots([&](const std::string&, ParamSlot& s) {
    if (!s.tensor->defined()) return;
    auto key = s.tensor->unsafeGetTensorImpl();
    auto it = done.find(key);
    if (it == done.end()) it = done.emplace(key, s.tensor->to(device)).first;
    *s.tensor = it->second;
  });
}

}  // namespace peft
