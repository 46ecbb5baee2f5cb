// Python-compatible regular expressions (PCRE2), for PEFT's target-module patterns.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace peft {

class Regex {
 public:
  // Throws std::invalid_argument naming the pattern and the offset of a syntax error.
  explicit Regex(const std::string& pattern);
  // re.fullmatch(pattern, s)
  bool full_match(const std::string& s) const;
  // re.match(pattern, s): anchored at the start only. On success, `group1` (if given)
  // receives capture group `group` (empty when it did not participate).
  bool match_prefix(const std::string& s, std::string* captured = nullptr, int group = 1) const;
  // All non-overlapping matches, as byte ranges, left to right (Unicode \w \s \d).
  std::vector<std::pair<size_t, size_t>> find_all(const std::string& s) const;
  const std::string& pattern() const { return pattern_; }

 private:
  struct Impl;
  std::string pattern_;
  std::shared_ptr<Impl> impl_;
};

}  // namespace peft
