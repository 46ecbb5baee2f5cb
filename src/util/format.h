// Small formatting helpers shared by the library and the tool.
#pragma once

#include <cstdint>
#include <string>

namespace peft {

// 3686400 -> "3,686,400" (Python's "{:,d}").
inline std::string with_commas(int64_t n) {
  std::string s = std::to_string(n), out;
  const size_t start = n < 0 ? 1 : 0;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i > start && (s.size() - i) % 3 == 0) out += ',';
    out += s[i];
  }
  return out;
}

}  // namespace peft
