// What injecting a method into a model shares across methods: HF PEFT's default target
// table, the check that a target is a plain Linear layer, and which base biases train.
#pragma once

#include <set>
#include <string>
#include <utility>
#include <vector>

#include "peft/adaptable.h"
#include "peft/model.h"

namespace peft {

// model_type -> default target_modules, as HF PEFT's TRANSFORMERS_MODELS_TO_*_TARGET_MODULES_MAPPING.
using DefaultTargets = std::vector<std::pair<std::string, std::vector<std::string>>>;

// HF PEFT's LoRA table, which most methods copy; `overrides` replace or add entries as
// HF's `LORA_MAPPING.copy()` followed by `mapping[type] = [...]` does.
DefaultTargets lora_default_targets(const DefaultTargets& overrides = {});

// Which layers a Linear-only method accepts.
enum class LinearHost {
  kLinear,           // nn.Linear: weight stored [out, in]
  kLinearOrConv1D,   // also GPT-2's Conv1D (weight stored [in, out])
};

// The layer at `path` when it is a Linear (or Conv1D, when allowed) with a weight; else
// throws "<METHOD>: target module '<path>' is a <type>; only ... layers are supported".
AdaptableLayer& linear_host(const char* method, const std::string& path, Module& m,
                            LinearHost accept = LinearHost::kLinear);

// HF's _mark_only_adapters_as_trainable for `bias`: "none" trains no base bias, "all"
// every parameter named "bias" or "*.bias" outside the adapter (names containing
// `adapter_marker`, e.g. ".lora_"), "<method>_only" the biases of the adapted modules.
std::vector<std::string> bias_parameters(Model& model, const std::string& bias, const std::string& adapter_marker,
                                         const std::set<std::string>& adapted);

}  // namespace peft
