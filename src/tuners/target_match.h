// HF PEFT's rules for which modules a tuner wraps (tuners_utils.check_target_module_exists).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "peft/tuner.h"
#include "peft/model.h"

namespace peft {

// True when `name` is excluded, matched by modules_to_save, or not targeted.
bool is_target(const TargetSpec& spec, const std::string& name);

// Modules of `model` that `spec` targets, in model order. "all-linear" expands to every
// Linear/Conv1D except the output head (and, for SEQ_CLS, the classifier head). Throws
// naming the patterns when nothing matches.
std::vector<std::pair<std::string, Module*>> find_targets(Model& model, TargetSpec spec, const std::string& task_type);

// Modules named by modules_to_save (HF's plain suffix rule: name.endswith(entry)).
std::vector<std::pair<std::string, Module*>> find_modules_to_save(Model& model, const std::vector<std::string>& names);

}  // namespace peft
