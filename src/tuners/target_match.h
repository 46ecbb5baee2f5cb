// HF PEFT's rules for which modules a tuner wraps (tuners_utils.check_target_module_exists).
#pragma once

#include <optional>
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

// HF's add_weighted_adapter refuses adapters that train their own copy of one module
// (modules_to_save); targets[i] belongs to adapters[i]. Throws naming both and the module.
void check_no_shared_modules_to_save(Model& model, const std::vector<std::string>& adapters,
                                     const std::vector<const TargetSpec*>& targets);

// A target_modules (or feedforward_modules) value as add_weighted_adapter sees it: a
// list, a regex, or neither.
struct ListOrRegex {
  std::optional<std::vector<std::string>> list;
  std::optional<std::string> regex;
};

// HF's config.target_modules once `c`'s adapter is injected into `model`: "all-linear"
// has become the set of the matched layers' names.
ListOrRegex injected_targets(Model& model, const AdapterConfig& c);

// HF's add_weighted_adapter over the adapters `names`: lists -> their union (a set),
// regexes -> "(re1)|(re2)|...", a list beside a regex is refused naming `key`. A missing
// value counts as an empty list.
ListOrRegex united(const std::vector<ListOrRegex>& values, const std::vector<std::string>& names, const char* key);

}  // namespace peft
