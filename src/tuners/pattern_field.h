// Reading and writing HF PEFT's {regex: value} config maps (rank_pattern, lambda_pattern).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "tuners/config_fields.h"
#include "util/json_file.h"
#include "util/regex.h"

namespace peft {

// `key`'s map in file order (null: empty); each regex must compile, each value be a V.
template <class V>
std::vector<std::pair<std::string, V>> read_pattern(const ConfigFields& f, const char* key) {
  const ojson& v = f.value(key);
  std::vector<std::pair<std::string, V>> out;
  if (v.is_null()) return out;
  if (!v.is_object()) f.fail("'" + std::string(key) + "' must be an object");
  for (const auto& [k, x] : v.items()) {
    Regex check(k);
    out.emplace_back(k, strict_get<V>(x, f.where() + ": " + key + " '" + k + "'"));
  }
  return out;
}

template <class V>
ojson pattern_json(const std::vector<std::pair<std::string, V>>& patterns) {
  ojson j = ojson::object();
  for (const auto& [k, v] : patterns) j[k] = v;
  return j;
}

}  // namespace peft
