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

// `s` with every occurrence of `from`, left to right, replaced by `to`, as Python's and
// Rust's str.replace do (tokenizers' decoders are Rust): an empty `from` matches at every
// character boundary, so `to` goes before each UTF-8 character and at the end.
inline std::string replace_all(const std::string& s, const std::string& from, const std::string& to) {
  std::string out;
  if (from.empty()) {
    for (const char c : s) {
      if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) out += to;  // not a continuation byte
      out += c;
    }
    return out + to;
  }
  size_t start = 0;
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, start)) {
    out.append(s, start, at - start).append(to);
    start = at + from.size();
  }
  return out.append(s, start, std::string::npos);
}

}  // namespace peft
