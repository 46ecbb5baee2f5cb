#include "tokenizer/charsmap.h"

#include <cstring>
#include <stdexcept>

#include "tokenizer/normalized.h"

namespace peft::tok {

namespace {
size_t offset(uint32_t u) { return (u >> 10) << ((u & (1u << 9)) >> 6); }
[[noreturn]] void fail(const std::string& where, const std::string& what) { throw std::runtime_error(where + ": " + what); }
}  // namespace

Charsmap::Charsmap(std::string_view blob, const std::string& where) : where_(where) {
  if (blob.size() < 4) fail(where, "precompiled_charsmap is shorter than its header");
  uint32_t trie_bytes = 0;
  std::memcpy(&trie_bytes, blob.data(), 4);  // little-endian, as x86 and ARM hosts are
  const size_t units = trie_bytes / 4;
  if (units > (blob.size() - 4) / 4)
    fail(where, "precompiled_charsmap's trie (" + std::to_string(trie_bytes) + " bytes) is longer than the map");
  units_.resize(units);
  if (units) std::memcpy(units_.data(), blob.data() + 4, units * 4);
  normalized_ = std::string(blob.substr(4 + units * 4));
  if (!valid_utf8(normalized_)) fail(where, "precompiled_charsmap's replacements are not UTF-8");
  if (units_.empty()) fail(where, "precompiled_charsmap has an empty trie");
}

uint32_t Charsmap::unit(size_t pos) const {
  if (pos >= units_.size()) fail(where_, "precompiled_charsmap's trie points outside itself");
  return units_[pos];
}

std::string_view Charsmap::replacement(size_t index) const {
  if (index > normalized_.size() || (index < normalized_.size() && (normalized_[index] & 0xC0) == 0x80))
    fail(where_, "precompiled_charsmap's trie points outside its replacements");
  const std::string_view rest = std::string_view(normalized_).substr(index);
  return rest.substr(0, rest.find('\0'));
}

template <class F>
void Charsmap::prefixes(std::string_view s, bool stop_at_nul, F f) const {
  size_t pos = offset(unit(0));
  for (size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c == 0 && stop_at_nul) return;
    pos ^= c;
    const uint32_t u = unit(pos);
    if ((u & ((1u << 31) | 0xffu)) != c) return;
    pos ^= offset(u);
    if ((u >> 8) & 1 && !f(Rule{i + 1, replacement(unit(pos) & ((1u << 31) - 1))})) return;
  }
}

std::optional<Charsmap::Rule> Charsmap::shortest(std::string_view s) const {
  std::optional<Rule> out;
  prefixes(s, /*stop_at_nul=*/true, [&](Rule r) { return out = r, false; });
  return out;
}

std::optional<Charsmap::Rule> Charsmap::longest(std::string_view s) const {
  std::optional<Rule> out;
  int found = 0;
  prefixes(s, /*stop_at_nul=*/false, [&](Rule r) {
    out = r;  // each later one is longer
    return ++found < 32;
  });
  return out;
}

}  // namespace peft::tok
