#include "tokenizer/normalized.h"

#include <utf8proc.h>

#include <algorithm>
#include <optional>
#include <stdexcept>

#include "util/regex.h"

namespace peft::tok {

size_t utf8_len(unsigned char lead) {
  if (lead < 0x80) return 1;
  if ((lead >> 5) == 0x6) return 2;
  if ((lead >> 4) == 0xE) return 3;
  if ((lead >> 3) == 0x1E) return 4;
  return 1;
}

bool valid_utf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    utf8proc_int32_t cp;
    auto n = utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(s.data() + i), s.size() - i, &cp);
    if (n <= 0) return false;
    i += n;
  }
  return true;
}

std::vector<char32_t> decode_utf8(const std::string& s) {
  std::vector<char32_t> out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    utf8proc_int32_t cp;
    auto n = utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(s.data() + i), s.size() - i, &cp);
    if (n <= 0) {
      out.push_back(0xFFFD);
      i += 1;
    } else {
      out.push_back(static_cast<char32_t>(cp));
      i += n;
    }
  }
  return out;
}

void append_utf8(std::string& out, char32_t c) {
  utf8proc_uint8_t buf[4];
  auto n = utf8proc_encode_char(static_cast<utf8proc_int32_t>(c), buf);
  out.append(reinterpret_cast<char*>(buf), n);
}

std::string encode_utf8(char32_t c) {
  std::string s;
  append_utf8(s, c);
  return s;
}

NormalizedString::NormalizedString(const std::string& text, size_t origin) : s_(text) {
  align_.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    size_t n = std::min(utf8_len(static_cast<unsigned char>(text[i])), text.size() - i);
    for (size_t k = 0; k < n; ++k) align_.emplace_back(origin + i, origin + i + n);
    i += n;
  }
}

Range NormalizedString::original(size_t begin, size_t end) const {
  if (align_.empty()) return {0, 0};
  if (begin >= end) {
    size_t p = begin < align_.size() ? align_[begin].first : align_.back().second;
    return {p, p};
  }
  return {align_[begin].first, align_[end - 1].second};
}

void NormalizedString::map_chars(const std::function<void(char32_t, std::u32string&)>& f) {
  std::string s;
  std::vector<Range> a;
  s.reserve(s_.size());
  a.reserve(s_.size());
  std::u32string out;
  size_t i = 0;
  while (i < s_.size()) {
    size_t n = std::min(utf8_len(static_cast<unsigned char>(s_[i])), s_.size() - i);
    utf8proc_int32_t cp;
    if (utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(s_.data() + i), n, &cp) <= 0) cp = 0xFFFD;
    out.clear();
    f(static_cast<char32_t>(cp), out);
    for (char32_t c : out) {
      size_t before = s.size();
      append_utf8(s, c);
      a.insert(a.end(), s.size() - before, align_[i]);
    }
    i += n;
  }
  s_ = std::move(s);
  align_ = std::move(a);
}

void NormalizedString::transform(const std::vector<std::pair<char32_t, int64_t>>& dest, size_t initial_offset) {
  size_t next = 0;  // byte where the next char to be replaced starts
  auto take_char = [&]() -> size_t {  // the byte length of the char consumed, 0 past the end
    if (next >= s_.size()) return 0;
    const size_t n = std::min(utf8_len(static_cast<unsigned char>(s_[next])), s_.size() - next);
    next += n;
    return n;
  };
  for (size_t i = 0; i < initial_offset; ++i) take_char();
  std::string s;
  std::vector<Range> a;
  s.reserve(s_.size());
  a.reserve(s_.size());
  const Range none{0, 0};
  for (const auto& [c, change] : dest) {
    const size_t idx = next;
    // An inserted char shares the alignment of the char before it.
    const Range& align = change > 0 ? (idx < 1 ? none : align_[std::min(idx, align_.size()) - 1])
                                    : (idx < align_.size() ? align_[idx] : (align_.empty() ? none : align_.back()));
    if (change <= 0) take_char();
    for (int64_t k = 0; change < 0 && k < -change; ++k) take_char();
    const size_t before = s.size();
    append_utf8(s, c);
    a.insert(a.end(), s.size() - before, align);
  }
  s_ = std::move(s);
  align_ = std::move(a);
}

namespace {

// A char of a decomposition: its change as NormalizedString::transform counts it, and its
// canonical combining class.
struct DecomposedChar {
  char32_t c;
  int64_t change;
  int ccc;
};

int combining_class(char32_t c) {
  return c < 0x300 ? 0 : utf8proc_get_property(static_cast<utf8proc_int32_t>(c))->combining_class;
}

// As tokenizers' unicode-normalization-alignments decomposes: each char's full
// decomposition, its first char replacing it (0) and the rest inserted (+1), then every run
// of non-starters stably sorted by combining class (the canonical order).
std::vector<DecomposedChar> decompose(const std::vector<char32_t>& cps, bool compat) {
  std::vector<DecomposedChar> out;
  out.reserve(cps.size());
  size_t run = 0;  // where the chars not yet in canonical order start
  auto order_run = [&] {
    std::stable_sort(out.begin() + static_cast<long>(run), out.end(),
                     [](const DecomposedChar& x, const DecomposedChar& y) { return x.ccc < y.ccc; });
    run = out.size();
  };
  const auto options = static_cast<utf8proc_option_t>(UTF8PROC_DECOMPOSE | (compat ? UTF8PROC_COMPAT : 0));
  utf8proc_int32_t parts[32];
  for (char32_t c : cps) {
    utf8proc_ssize_t n = 1;
    parts[0] = static_cast<utf8proc_int32_t>(c);
    if (c >= 0x80) {
      int boundclass = 0;
      n = utf8proc_decompose_char(static_cast<utf8proc_int32_t>(c), parts, 32, options, &boundclass);
      if (n < 1 || n > 32) {  // unassigned or invalid: kept as it is
        parts[0] = static_cast<utf8proc_int32_t>(c);
        n = 1;
      }
    }
    for (utf8proc_ssize_t k = 0; k < n; ++k) {
      const auto d = static_cast<char32_t>(parts[k]);
      const int ccc = combining_class(d);
      if (ccc == 0) order_run();
      out.push_back({d, k == 0 ? 0 : 1, ccc});
    }
  }
  order_run();
  return out;
}

// The primary composite of a starter and the char after it, if any.
std::optional<char32_t> compose_pair(char32_t starter, char32_t c) {
  if (c < 0x300) return std::nullopt;  // no composite has a Latin-1 char second
  utf8proc_int32_t pair[2] = {static_cast<utf8proc_int32_t>(starter), static_cast<utf8proc_int32_t>(c)};
  if (utf8proc_normalize_utf32(pair, 2, UTF8PROC_COMPOSE) != 1) return std::nullopt;
  return static_cast<char32_t>(pair[0]);
}

// Canonical composition as unicode-normalization-alignments' Recompositions runs it: a
// composite takes its starter's place and the change k + c - 1 (it absorbs a char); chars
// blocked from the starter wait in `blocked` and follow it.
std::vector<std::pair<char32_t, int64_t>> recompose(const std::vector<DecomposedChar>& in) {
  using Change = std::pair<char32_t, int64_t>;
  std::vector<Change> out, blocked;
  out.reserve(in.size());
  std::optional<Change> starter;
  int last_ccc = -1;  // of the last blocked char; -1: none since the starter
  auto flush = [&] {
    out.push_back(*starter);
    out.insert(out.end(), blocked.begin(), blocked.end());
    blocked.clear();
    last_ccc = -1;
  };
  for (const auto& [c, change, ccc] : in) {
    if (!starter) {
      if (ccc == 0) starter = Change{c, change};
      else out.emplace_back(c, change);
      continue;
    }
    if (last_ccc < 0 || last_ccc < ccc) {  // not blocked
      if (auto composite = compose_pair(starter->first, c)) {
        *starter = {*composite, starter->second + change - 1};
        continue;
      }
    }
    if (ccc == 0) {
      flush();
      starter = Change{c, change};
    } else {
      blocked.emplace_back(c, change);
      last_ccc = ccc;
    }
  }
  if (starter) flush();
  return out;
}

}  // namespace

void NormalizedString::normalize_form(int options) {
  bool ascii = true;
  for (unsigned char ch : s_) ascii = ascii && ch < 0x80;
  if (ascii) return;  // every normal form leaves ASCII as it is
  auto chars = decompose(decode_utf8(s_), (options & UTF8PROC_COMPAT) != 0);
  if (options & UTF8PROC_COMPOSE) return transform(recompose(chars), 0);
  std::vector<std::pair<char32_t, int64_t>> changes;
  changes.reserve(chars.size());
  for (const auto& d : chars) changes.emplace_back(d.c, d.change);
  transform(changes, 0);
}

void NormalizedString::replace(const std::string& pattern, bool is_regex, const std::string& content) {
  std::vector<Range> matches;
  if (is_regex) {
    matches = Regex(pattern).find_all(s_);
  } else if (!pattern.empty()) {
    for (size_t p = s_.find(pattern); p != std::string::npos; p = s_.find(pattern, p + pattern.size()))
      matches.emplace_back(p, p + pattern.size());
  }
  if (matches.empty()) return;
  std::string s;
  std::vector<Range> a;
  size_t last = 0;
  for (const auto& [b, e] : matches) {
    s.append(s_, last, b - last);
    a.insert(a.end(), align_.begin() + last, align_.begin() + b);
    Range r = e == 0 ? Range{0, 0} : align_[e - 1];
    s += content;
    a.insert(a.end(), content.size(), r);
    last = e;
  }
  s.append(s_, last, std::string::npos);
  a.insert(a.end(), align_.begin() + last, align_.end());
  s_ = std::move(s);
  align_ = std::move(a);
}

void NormalizedString::prepend(const std::string& prefix) {
  if (s_.empty()) return;
  Range r = align_[0];
  s_.insert(0, prefix);
  align_.insert(align_.begin(), prefix.size(), r);
}

void NormalizedString::strip(bool left, bool right) {
  auto cps = decode_utf8(s_);
  size_t lead = 0, trail = 0;
  if (left)
    for (char32_t c : cps) {
      if (!is_whitespace(c)) break;
      lead += encode_utf8(c).size();
    }
  if (right)
    for (auto it = cps.rbegin(); it != cps.rend(); ++it) {
      if (!is_whitespace(*it) || lead + trail >= s_.size()) break;
      trail += encode_utf8(*it).size();
    }
  if (lead + trail >= s_.size()) {
    s_.clear();
    align_.clear();
    return;
  }
  *this = slice(lead, s_.size() - trail);
}

NormalizedString NormalizedString::slice(size_t begin, size_t end) const {
  NormalizedString n;
  n.s_ = s_.substr(begin, end - begin);
  n.align_.assign(align_.begin() + begin, align_.begin() + end);
  return n;
}

SplitBehavior parse_split_behavior(const std::string& s, const std::string& where) {
  if (s == "Removed") return SplitBehavior::kRemoved;
  if (s == "Isolated") return SplitBehavior::kIsolated;
  if (s == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (s == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (s == "Contiguous") return SplitBehavior::kContiguous;
  throw std::runtime_error(where + ": unknown split behavior '" + s + "'");
}

std::vector<NormalizedString> split_by_matches(const NormalizedString& ns, const std::vector<Range>& matches,
                                               SplitBehavior behavior) {
  // Pieces as (range, is_match), covering the whole string.
  std::vector<std::pair<Range, bool>> pieces;
  size_t last = 0;
  for (const auto& m : matches) {
    if (m.first > last) pieces.push_back({{last, m.first}, false});
    if (m.second > m.first) pieces.push_back({m, true});
    last = m.second;
  }
  if (last < ns.str().size()) pieces.push_back({{last, ns.str().size()}, false});
  std::vector<Range> out;
  switch (behavior) {
    case SplitBehavior::kRemoved:
      for (auto& [r, m] : pieces)
        if (!m) out.push_back(r);
      break;
    case SplitBehavior::kIsolated:
      for (auto& [r, m] : pieces) out.push_back(r);
      break;
    case SplitBehavior::kContiguous: {  // consecutive matches form one piece
      bool prev_match = false;
      for (auto& [r, m] : pieces) {
        if (m && prev_match && !out.empty()) out.back().second = r.second;
        else out.push_back(r);
        prev_match = m;
      }
      break;
    }
    case SplitBehavior::kMergedWithPrevious: {
      bool prev_match = false;
      for (auto& [r, m] : pieces) {
        if (m && !out.empty() && !prev_match) out.back().second = r.second;
        else out.push_back(r);
        prev_match = m;
      }
      break;
    }
    case SplitBehavior::kMergedWithNext: {
      bool prev_match = false;
      for (auto& [r, m] : pieces) {
        if (!m && prev_match && !out.empty()) out.back().second = r.second;
        else out.push_back(r);
        prev_match = m;
      }
      break;
    }
  }
  std::vector<NormalizedString> res;
  for (const auto& r : out)
    if (r.second > r.first) res.push_back(ns.slice(r.first, r.second));
  return res;
}

bool is_whitespace(char32_t c) {
  // Rust's char::is_whitespace: the White_Space property.
  switch (c) {
    case 0x09: case 0x0A: case 0x0B: case 0x0C: case 0x0D: case 0x20: case 0x85: case 0xA0: case 0x1680:
    case 0x2028: case 0x2029: case 0x202F: case 0x205F: case 0x3000:
      return true;
    default:
      return c >= 0x2000 && c <= 0x200A;
  }
}

bool is_punctuation(char32_t c) {
  if (c < 0x80) return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126);
  auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return cat >= UTF8PROC_CATEGORY_PC && cat <= UTF8PROC_CATEGORY_PO;
}

bool is_control(char32_t c) {
  if (c == '\t' || c == '\n' || c == '\r') return false;
  auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  // Unassigned code points (Cn) are not "other" to the unicode_categories crate that
  // tokenizers asks: they stay in the text.
  return cat == UTF8PROC_CATEGORY_CC || cat == UTF8PROC_CATEGORY_CF || cat == UTF8PROC_CATEGORY_CO ||
         cat == UTF8PROC_CATEGORY_CS;
}

bool is_chinese_char(char32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
         (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

bool is_mark_nonspacing(char32_t c) {
  return utf8proc_category(static_cast<utf8proc_int32_t>(c)) == UTF8PROC_CATEGORY_MN;
}

bool is_numeric(char32_t c) {
  auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return cat == UTF8PROC_CATEGORY_ND || cat == UTF8PROC_CATEGORY_NL || cat == UTF8PROC_CATEGORY_NO;
}

}  // namespace peft::tok

namespace peft::tok {
bool is_combining_mark(char32_t c) {
  auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return cat == UTF8PROC_CATEGORY_MN || cat == UTF8PROC_CATEGORY_MC || cat == UTF8PROC_CATEGORY_ME;
}

bool is_alphanumeric(char32_t c) {
  auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return (cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO) || is_numeric(c);
}
}  // namespace peft::tok
