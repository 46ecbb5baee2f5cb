// SentencePiece's precompiled charsmap, as model files and tokenizer.json's Precompiled
// normalizer carry it: a little-endian u32 trie size, a Darts double-array trie over UTF-8
// byte strings, then the NUL-ended replacements its values point into. Read without
// trusting it: a corrupt map throws naming `where`, never reads outside itself.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace peft::tok {

class Charsmap {
 public:
  Charsmap(std::string_view blob, const std::string& where);

  // A rule: the length of the prefix it matches and its replacement.
  using Rule = std::pair<size_t, std::string_view>;
  // The rule of the shortest prefix of `s` (tokenizers' spm_precompiled: the first
  // common-prefix result; a NUL byte ends the search).
  std::optional<Rule> shortest(std::string_view s) const;
  // The rule of the longest prefix among the first 32 found (the sentencepiece library's
  // NormalizePrefix, whose result buffer holds 32).
  std::optional<Rule> longest(std::string_view s) const;

 private:
  // Calls f(rule) for each prefix of `s` the trie holds, shortest first, while f returns
  // true.
  template <class F>
  void prefixes(std::string_view s, bool stop_at_nul, F f) const;
  uint32_t unit(size_t pos) const;
  std::string_view replacement(size_t index) const;

  std::vector<uint32_t> units_;
  std::string normalized_;
  std::string where_;
};

}  // namespace peft::tok
