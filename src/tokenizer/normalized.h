// A string being normalized and split, remembering for every byte which bytes of the
// original input it came from (HF tokenizers' NormalizedString), plus UTF-8 helpers.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace peft::tok {

using Range = std::pair<size_t, size_t>;

// UTF-8 helpers. decode_utf8 returns code points; invalid bytes become U+FFFD.
std::vector<char32_t> decode_utf8(const std::string& s);
void append_utf8(std::string& out, char32_t c);
std::string encode_utf8(char32_t c);
size_t utf8_len(unsigned char lead);
bool valid_utf8(const std::string& s);

class NormalizedString {
 public:
  NormalizedString() = default;
  // `origin` is where `text` starts in the input (offsets are reported against the input).
  explicit NormalizedString(const std::string& text, size_t origin = 0);

  const std::string& str() const { return s_; }
  bool empty() const { return s_.empty(); }
  // The input range that bytes [begin, end) of this string came from.
  Range original(size_t begin, size_t end) const;
  Range original_span() const { return original(0, s_.size()); }

  // Rewrites each char into zero or more chars that all keep its origin.
  void map_chars(const std::function<void(char32_t, std::u32string&)>& f);
  // Applies a Unicode normalization form (NFC/NFD/NFKC/NFKD); composed chars keep the
  // origin of their first component, decomposed ones of their source.
  void normalize_form(int utf8proc_options);
  // Every match of a regex (or literal) becomes `content`, aligned to the match's last char.
  void replace(const std::string& pattern, bool is_regex, const std::string& content);
  // HF tokenizers' NormalizedString::transform over the whole string: each new char comes
  // with a change of 0 (it replaces the next char), +n (it is inserted, aligned as the char
  // before it) or -n (it replaces the next char and removes the n after it), after
  // `initial_offset` chars are dropped from the start. Alignments follow tokenizers' exactly,
  // including where a caller's changes do not add up to the string it replaces.
  void transform(const std::vector<std::pair<char32_t, int64_t>>& dest, size_t initial_offset);
  // Inserts `prefix` before the first char, aligned to that char.
  void prepend(const std::string& prefix);
  // Removes leading/trailing whitespace.
  void strip(bool left, bool right);

  // Sub-string of bytes [begin, end) with its alignments.
  NormalizedString slice(size_t begin, size_t end) const;

 private:
  std::string s_;
  std::vector<Range> align_;  // per byte of s_
};

// How a split keeps the delimiter (HF's SplitDelimiterBehavior).
enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };
SplitBehavior parse_split_behavior(const std::string& s, const std::string& where);

// Splits `ns` by the matches (byte ranges, sorted, non-overlapping) per `behavior`.
std::vector<NormalizedString> split_by_matches(const NormalizedString& ns, const std::vector<Range>& matches,
                                               SplitBehavior behavior);

// Unicode classes as Rust's char methods define them (what tokenizers uses).
bool is_whitespace(char32_t c);
bool is_punctuation(char32_t c);  // BERT: ASCII punctuation or Unicode P*
bool is_control(char32_t c);      // BERT: Cc/Cf/Co except \t \n \r (unassigned chars stay)
bool is_chinese_char(char32_t c);
bool is_mark_nonspacing(char32_t c);
bool is_combining_mark(char32_t c);  // Mn, Mc, Me
bool is_numeric(char32_t c);  // Rust char::is_numeric: Nd, Nl, No
bool is_alphanumeric(char32_t c);  // letters (L*) or numeric

}  // namespace peft::tok
