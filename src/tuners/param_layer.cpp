#include "peft/param_layer.h"

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>

#include <stdexcept>

namespace peft {

at::Tensor* ParamAdaptableLayer::parameter(const std::string& name) {
  for (const auto& s : slots())
    if (s.name == name) return s.tensor;
  return nullptr;
}

std::vector<std::string> ParamAdaptableLayer::parameter_names() const {
  std::vector<std::string> out;
  for (const auto& s : slots()) out.push_back(s.name);
  return out;
}

at::Tensor ParamAdaptableLayer::param_linear(const std::string& name, int64_t index, const at::Tensor& x) {
  at::Tensor* p = parameter(name);
  if (!p) throw std::logic_error(type_name() + " has no parameter '" + name + "'");
  const at::Tensor w = p->dim() == 3 ? p->select(0, index) : *p;
  at::Tensor out = at::linear(x, w);
  if (MixedBatch::current()) {
    for (const auto& n : adapter_names())
      if (dynamic_cast<ParamAdapter*>(adapter(n)))
        throw std::invalid_argument("adapter '" + n + "' adapts parameters of " + type_name() +
                                    " (target_parameters), which cannot take part in a mixed-adapter batch");
    return out;
  }
  if (adapters_disabled) return out;
  if (composition)
    throw std::invalid_argument(type_name() + " carries parameter adapters (target_parameters), which run-time "
                                "compositions do not combine");
  for (const auto& n : active) {
    auto* a = dynamic_cast<ParamAdapter*>(adapter(n));
    if (!a || a->merged()) continue;
    auto f = a->factors(name, index);
    if (!f) continue;
    // As LoraLinear: under autocast the products run in its dtype, else in the adapter's.
    auto xa = at::autocast::is_autocast_enabled(x.device().type()) ? x : x.to(f->A.scalar_type());
    out = out + (at::linear(at::linear(xa, f->A), f->B) * f->scale).to(out.scalar_type());
  }
  return out;
}

}  // namespace peft
