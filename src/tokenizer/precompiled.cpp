// The Precompiled normalizer: SentencePiece's normalization rules (nmt_nfkc and the like)
// as its models embed them, a double-array trie over UTF-8 byte strings whose values point
// into a blob of NUL-terminated replacements. T5, mT5, XLM-R, mBART, NLLB, Pegasus, ALBERT
// and DeBERTa-v3 tokenizer.json files normalize with it. Read as tokenizers' spm_precompiled
// reads it; where that code would panic on a corrupt map, this one throws naming the file.
#include <utf8proc.h>

#include <cstring>
#include <optional>
#include <string_view>

#include "tokenizer/charsmap.h"
#include "tokenizer/components.h"

namespace peft::tok {

namespace {

std::string base64_decode(const std::string& in, const std::string& where) {
  auto value = [&](char c) -> uint32_t {
    if (c >= 'A' && c <= 'Z') return static_cast<uint32_t>(c - 'A');
    if (c >= 'a' && c <= 'z') return static_cast<uint32_t>(c - 'a' + 26);
    if (c >= '0' && c <= '9') return static_cast<uint32_t>(c - '0' + 52);
    if (c == '+') return 62;
    if (c == '/') return 63;
    fail(where, "precompiled_charsmap is not base64 (character " + std::to_string(static_cast<unsigned char>(c)) + ")");
  };
  size_t n = in.size();
  while (n > 0 && in[n - 1] == '=' && in.size() - n < 2) --n;
  if (in.size() % 4 != 0 || n % 4 == 1) fail(where, "precompiled_charsmap is not base64 (length " + std::to_string(in.size()) + ")");
  std::string out;
  out.reserve(n / 4 * 3 + 2);
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < n; ++i) {
    acc = (acc << 6) | value(in[i]);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  return out;
}

class Precompiled : public Normalizer {
 public:
  Precompiled(const Json& j, const std::string& where)
      : charsmap_(base64_decode(j.at("precompiled_charsmap").get<std::string>(), where), where) {
    for (int b = 1; b < 0x80; ++b) {
      const char c = static_cast<char>(b);
      ascii_kept_[b] = !transform(std::string_view(&c, 1));
    }
  }

  void normalize(NormalizedString& s) const override {
    const std::string& text = s.str();
    std::vector<std::pair<char32_t, int64_t>> dest;
    dest.reserve(text.size());
    bool modified = false;
    size_t begin = 0;
    while (begin < text.size()) {
      // An ASCII char before another (CR LF aside) is a grapheme of its own: most text
      // takes this path, through a table of the ASCII chars the map leaves alone.
      const auto b = static_cast<unsigned char>(text[begin]);
      const bool next_ascii = begin + 1 == text.size() || static_cast<unsigned char>(text[begin + 1]) < 0x80;
      if (b < 0x80 && next_ascii && ascii_kept_[b] && !(b == '\r' && begin + 1 < text.size() && text[begin + 1] == '\n')) {
        dest.emplace_back(b, 0);
        ++begin;
        continue;
      }
      const size_t end = grapheme_end(text, begin);
      const std::string_view grapheme(text.data() + begin, end - begin);
      begin = end;
      // As tokenizers: a short grapheme is looked up whole, else (or when it has no
      // entry) char by char.
      if (grapheme.size() < 6) {
        if (auto norm = transform(grapheme)) {
          modified = true;
          push(dest, *norm, count_chars(grapheme));
          continue;
        }
      }
      for (size_t i = 0; i < grapheme.size();) {
        const size_t n = std::min(utf8_len(static_cast<unsigned char>(grapheme[i])), grapheme.size() - i);
        const std::string_view part = grapheme.substr(i, n);
        i += n;
        if (auto norm = transform(part)) {
          modified = true;
          push(dest, *norm, 1);
        } else {
          dest.emplace_back(decode_utf8(std::string(part)).at(0), 0);
        }
      }
    }
    if (modified) s.transform(dest, 0);
  }

 private:
  // The replacement's chars as tokenizers records them: each replaces a char of the source;
  // the last ones of a longer replacement are insertions, and a shorter one's last entry
  // (the previous char's, when the replacement is empty) removes the chars left over.
  static void push(std::vector<std::pair<char32_t, int64_t>>& dest, const std::string& norm, int64_t old_count) {
    const auto cps = decode_utf8(norm);
    const int64_t diff = static_cast<int64_t>(cps.size()) - old_count;
    for (char32_t c : cps) dest.emplace_back(c, 0);
    if (diff > 0)
      for (int64_t k = 0; k < diff; ++k) dest[dest.size() - 1 - static_cast<size_t>(k)].second = 1;
    else if (diff < 0 && !dest.empty())
      dest.back().second += diff;
  }

  static int64_t count_chars(std::string_view s) {
    int64_t n = 0;
    for (unsigned char c : s) n += (c & 0xC0) != 0x80;
    return n;
  }

  // End of the extended grapheme cluster starting at byte `begin`.
  static size_t grapheme_end(const std::string& text, size_t begin) {
    utf8proc_int32_t state = 0, prev = -1;
    size_t i = begin;
    while (i < text.size()) {
      const size_t n = std::min(utf8_len(static_cast<unsigned char>(text[i])), text.size() - i);
      utf8proc_int32_t cp;
      if (utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(text.data() + i), static_cast<utf8proc_ssize_t>(n),
                           &cp) <= 0)
        cp = 0xFFFD;
      if (prev >= 0 && utf8proc_grapheme_break_stateful(prev, cp, &state)) break;
      prev = cp;
      i += n;
    }
    return i;
  }

  // The replacement of the shortest prefix of `chunk` the map holds (spm_precompiled's
  // transform), if any.
  std::optional<std::string> transform(std::string_view chunk) const {
    const auto rule = charsmap_.shortest(chunk);
    return rule ? std::optional<std::string>(rule->second) : std::nullopt;
  }

  Charsmap charsmap_;
  bool ascii_kept_[0x80] = {};  // the ASCII chars the map has no entry for
};

}  // namespace

std::unique_ptr<Normalizer> make_precompiled(const Json& j, const std::string& where) {
  return std::make_unique<Precompiled>(j, where);
}

}  // namespace peft::tok
