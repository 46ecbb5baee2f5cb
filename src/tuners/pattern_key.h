// HF PEFT's get_pattern_key for rank_pattern / alpha_pattern / lambda_pattern maps.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "util/regex.h"

namespace peft {

// The value of the first pattern p (in file order) with re.match(rf"(.*\.)?({p})$", module),
// or nullptr when none matches.
template <class V>
const V* pattern_value(const std::vector<std::pair<std::string, V>>& patterns, const std::string& module) {
  for (const auto& [p, v] : patterns)
    if (Regex("(.*\\.)?(" + p + ")$").match_prefix(module)) return &v;
  return nullptr;
}

}  // namespace peft
