// add_weighted_ia3_adapter: HF PEFT 0.21's IA3Model.add_weighted_adapter and its
// _check_add_weighted_adapter, step for step.
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <stdexcept>

#include "peft/ia3.h"
#include "peft/ia3_combine.h"
#include "tuners/target_match.h"
#include "util/suggest.h"

namespace peft {

namespace {

const IA3Config& ia3_config(const PeftModel& peft, const std::string& name) {
  const auto names = peft.adapters();
  if (std::find(names.begin(), names.end(), name) == names.end())
    throw std::invalid_argument("adapter '" + name + "' does not exist" + did_you_mean(name, names));
  const AdapterConfig& c = peft.config(name);
  if (c.peft_type() != "IA3")
    throw std::invalid_argument("adapter '" + name + "' is " + c.peft_type() +
                                "; add_weighted_ia3_adapter combines IA3 adapters only");
  return static_cast<const IA3Config&>(c);
}

at::Tensor* ia3_slot(AdaptableLayer& host, const std::string& name) {
  LayerAdapter* a = host.adapter(name);
  if (!a) return nullptr;
  at::Tensor* slot = nullptr;
  a->visit_slots([&](const std::string& key, Module::ParamSlot& s) {
    if (key == "ia3_l") slot = s.tensor;
  });
  return slot;
}

void check_arguments(const PeftModel& peft, const std::vector<std::string>& adapters,
                     const std::vector<double>& weights, const std::string& adapter_name) {
  if (adapters.empty()) throw std::invalid_argument("'adapters' is empty: name at least one adapter to combine");
  if (weights.size() != adapters.size())
    throw std::invalid_argument("'weights' has " + std::to_string(weights.size()) + " entries for " +
                                std::to_string(adapters.size()) + " adapters (one weight per adapter, in order)");
  for (double w : weights)
    if (!std::isfinite(w)) throw std::invalid_argument("'weights' must be finite numbers");
  const auto existing = peft.adapters();
  if (std::find(existing.begin(), existing.end(), adapter_name) != existing.end())
    throw std::invalid_argument("an adapter named '" + adapter_name + "' already exists");
  for (const auto& a : adapters)
    if (std::count(adapters.begin(), adapters.end(), a) > 1)
      throw std::invalid_argument("adapter '" + a + "' is named twice");
}

// The merged vector of one layer: zero, plus each adapter's vector times its weight.
void fill_layer(const std::string& path, AdaptableLayer& host, const std::string& adapter_name,
                const std::vector<std::string>& adapters, const std::vector<double>& weights) {
  at::Tensor* target = ia3_slot(host, adapter_name);
  if (!target) throw std::logic_error("layer '" + path + "' did not get the combined adapter");
  at::Tensor sum = at::zeros_like(*target);
  bool any = false;
  for (size_t i = 0; i < adapters.size(); ++i) {
    const at::Tensor* src = ia3_slot(host, adapters[i]);
    if (!src) continue;
    if (src->sizes() != sum.sizes())
      throw std::invalid_argument("layer '" + path + "': adapter '" + adapters[i] + "' has ia3_l of shape " +
                                  c10::str(src->sizes()) + " but the combined one " + c10::str(sum.sizes()) +
                                  " (the layer is feed-forward in one adapter's feedforward_modules and not in "
                                  "another's; HF fails on this too)");
    sum += *src * weights[i];  // HF: target_ia3_l.data += current_adapter_ia3_l.data * weight
    any = true;
  }
  if (!any)
    throw std::invalid_argument("layer '" + path + "': none of the combined adapters has IA3 there (HF PEFT would "
                                "leave the merged vector zero, which silences the layer)");
  *target = sum;
}

}  // namespace

void add_weighted_ia3_adapter(PeftModel& peft, const std::vector<std::string>& adapters,
                              const std::vector<double>& weights, const std::string& adapter_name) {
  check_arguments(peft, adapters, weights, adapter_name);
  std::vector<const IA3Config*> cfgs;
  for (const auto& n : adapters) cfgs.push_back(&ia3_config(peft, n));
  std::vector<const TargetSpec*> targets_of;
  for (const auto* c : cfgs) targets_of.push_back(&c->targets);
  check_no_shared_modules_to_save(peft.model(), adapters, targets_of);

  std::vector<ListOrRegex> targets, feedforward;
  for (const auto* c : cfgs) {
    targets.push_back(injected_targets(peft.model(), *c));
    feedforward.push_back({c->feedforward_list, c->feedforward_regex});
  }
  IA3Config cfg = *cfgs[0];
  const auto t = united(targets, adapters, "target_modules");
  cfg.targets.target_list = t.list;
  cfg.targets.target_regex = t.regex;
  const auto ff = united(feedforward, adapters, "feedforward_modules");
  cfg.feedforward_list = ff.list;
  cfg.feedforward_regex = ff.regex;
  cfg.source.erase("target_modules");
  cfg.source.erase("feedforward_modules");
  peft.add_adapter(adapter_name, cfg);

  try {
    c10::NoGradGuard no_grad;
    for (auto& [path, m] : peft.config(adapter_name).layer_targets(peft.model()))
      if (auto* host = dynamic_cast<AdaptableLayer*>(m)) fill_layer(path, *host, adapter_name, adapters, weights);
  } catch (...) {
    peft.delete_adapter(adapter_name);  // no half-made adapter stays behind
    throw;
  }
}

}  // namespace peft
