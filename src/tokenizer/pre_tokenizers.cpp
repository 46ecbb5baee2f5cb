#include "tokenizer/components.h"
#include "util/regex.h"

namespace peft::tok {

namespace {

const char* kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// One match per char for which `pred` holds.
template <class Pred>
std::vector<Range> char_matches(const std::string& s, Pred pred) {
  std::vector<Range> out;
  size_t i = 0;
  for (char32_t c : decode_utf8(s)) {
    size_t n = encode_utf8(c).size();
    if (c == 0xFFFD) n = std::min(utf8_len(static_cast<unsigned char>(s[i])), s.size() - i);
    if (pred(c)) out.emplace_back(i, i + n);
    i += n;
  }
  return out;
}

// The complement of `matches` within [0, size).
std::vector<Range> invert(const std::vector<Range>& matches, size_t size) {
  std::vector<Range> out;
  size_t last = 0;
  for (const auto& m : matches) {
    if (m.first > last) out.emplace_back(last, m.first);
    last = m.second;
  }
  if (last < size) out.emplace_back(last, size);
  return out;
}

template <class F>
void each_piece(std::vector<NormalizedString>& pieces, F f) {
  std::vector<NormalizedString> out;
  for (auto& p : pieces) {
    auto sub = f(p);
    for (auto& s : sub) out.push_back(std::move(s));
  }
  pieces = std::move(out);
}

class ByteLevel : public PreTokenizer {
 public:
  explicit ByteLevel(const Json& j)
      : prefix_space_(j.value("add_prefix_space", true)), regex_(j.value("use_regex", true)), re_(kGpt2Pattern) {}
  void split(std::vector<NormalizedString>& pieces) const override {
    each_piece(pieces, [&](NormalizedString& p) {
      if (prefix_space_ && (p.str().empty() || p.str()[0] != ' ')) p.prepend(" ");
      std::vector<NormalizedString> parts =
          regex_ ? split_by_matches(p, re_.find_all(p.str()), SplitBehavior::kIsolated) : std::vector{p};
      const auto& table = bytes_to_chars();
      for (auto& part : parts) {
        // Each byte of a char becomes one printable char with that char's origin.
        std::string bytes;
        part.map_chars([&](char32_t c, std::u32string& out) {
          bytes.clear();
          append_utf8(bytes, c);
          for (unsigned char b : bytes) out += table[b];
        });
      }
      return parts;
    });
  }

 private:
  bool prefix_space_, regex_;
  Regex re_;
};

class Split : public PreTokenizer {
 public:
  Split(const Json& j, const std::string& where)
      : behavior_(parse_split_behavior(j.value("behavior", std::string("Isolated")), where)),
        invert_(j.value("invert", false)) {
    const auto& p = j.at("pattern");
    if (p.contains("Regex")) re_ = std::make_unique<Regex>(p["Regex"].get<std::string>());
    else if (p.contains("String")) literal_ = p["String"].get<std::string>();
    else fail(where, "pattern must have 'String' or 'Regex'");
  }
  void split(std::vector<NormalizedString>& pieces) const override {
    each_piece(pieces, [&](NormalizedString& p) {
      std::vector<Range> m;
      if (re_) {
        m = re_->find_all(p.str());
      } else if (!literal_.empty()) {
        for (size_t i = p.str().find(literal_); i != std::string::npos; i = p.str().find(literal_, i + literal_.size()))
          m.emplace_back(i, i + literal_.size());
      }
      if (invert_) m = invert(m, p.str().size());
      return split_by_matches(p, m, behavior_);
    });
  }

 private:
  SplitBehavior behavior_;
  bool invert_;
  std::unique_ptr<Regex> re_;
  std::string literal_;
};

class Metaspace : public PreTokenizer {
 public:
  explicit Metaspace(const Json& j) : split_(j.value("split", true)) {
    replacement_ = j.value("replacement", std::string("\u2581"));
    if (j.contains("prepend_scheme")) scheme_ = j["prepend_scheme"].get<std::string>();
    else scheme_ = j.value("add_prefix_space", true) ? "always" : "never";
  }
  void split(std::vector<NormalizedString>& pieces) const override {
    each_piece(pieces, [&](NormalizedString& p) {
      p.replace(" ", false, replacement_);
      const bool starts = p.str().rfind(replacement_, 0) == 0;
      if (!starts && (scheme_ == "always" || (scheme_ == "first" && p.original_span().first == 0)))
        p.prepend(replacement_);
      if (!split_) return std::vector{p};
      std::vector<Range> m;
      for (size_t i = p.str().find(replacement_); i != std::string::npos;
           i = p.str().find(replacement_, i + replacement_.size()))
        m.emplace_back(i, i + replacement_.size());
      return split_by_matches(p, m, SplitBehavior::kMergedWithNext);
    });
  }
  std::string replacement_, scheme_;

 private:
  bool split_;
};

class Whitespace : public PreTokenizer {
 public:
  // tokenizers' \w+|[^\w\s]+ under Oniguruma, whose \w is Unicode's word class
  // (alphabetic, marks, decimal digits, connector punctuation, joiners); PCRE2's \w is
  // letters, all numbers and '_'.
  Whitespace()
      : re_(R"([\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\x{200C}\x{200D}]+|[^\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\x{200C}\x{200D}\s]+)") {}
  void split(std::vector<NormalizedString>& pieces) const override {
    // Every match is a piece of its own (tokenizers splits with invert): "dog." is "dog", ".".
    each_piece(pieces, [&](NormalizedString& p) {
      std::vector<NormalizedString> out;
      for (const auto& [b, e] : re_.find_all(p.str())) out.push_back(p.slice(b, e));
      return out;
    });
  }

 private:
  Regex re_;
};

class CharSplit : public PreTokenizer {
 public:
  CharSplit(bool (*pred)(char32_t), SplitBehavior b) : pred_(pred), behavior_(b) {}
  void split(std::vector<NormalizedString>& pieces) const override {
    each_piece(pieces, [&](NormalizedString& p) { return split_by_matches(p, char_matches(p.str(), pred_), behavior_); });
  }

 private:
  bool (*pred_)(char32_t);
  SplitBehavior behavior_;
};

class Sequence : public PreTokenizer {
 public:
  Sequence(const Json& j, const std::string& where) {
    for (const auto& p : j.at("pretokenizers")) items_.push_back(make_pre_tokenizer(p, where));
  }
  void split(std::vector<NormalizedString>& pieces) const override {
    for (const auto& p : items_) p->split(pieces);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> items_;
};

class BertPre : public PreTokenizer {
 public:
  void split(std::vector<NormalizedString>& pieces) const override {
    ws_.split(pieces);
    punct_.split(pieces);
  }

 private:
  CharSplit ws_{is_whitespace, SplitBehavior::kRemoved};
  CharSplit punct_{is_punctuation, SplitBehavior::kIsolated};
};

}  // namespace

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const Json& j, const std::string& where_in) {
  if (j.is_null()) return nullptr;
  const std::string type = j.value("type", std::string());
  const std::string where = where_in + ": pre_tokenizer " + type;
  try {
    if (type == "ByteLevel") return std::make_unique<ByteLevel>(j);
    if (type == "Split") return std::make_unique<Split>(j, where);
    if (type == "Metaspace") return std::make_unique<Metaspace>(j);
    if (type == "Whitespace") return std::make_unique<Whitespace>();
    if (type == "WhitespaceSplit") return std::make_unique<CharSplit>(is_whitespace, SplitBehavior::kRemoved);
    if (type == "BertPreTokenizer") return std::make_unique<BertPre>();
    if (type == "Punctuation")
      return std::make_unique<CharSplit>(is_punctuation,
                                         parse_split_behavior(j.value("behavior", std::string("Isolated")), where));
    if (type == "Digits")
      return std::make_unique<CharSplit>(is_numeric, j.value("individual_digits", false) ? SplitBehavior::kIsolated
                                                                                         : SplitBehavior::kContiguous);
    if (type == "Sequence") return std::make_unique<Sequence>(j, where_in);
  } catch (const nlohmann::json::exception& e) {
    fail(where, e.what());
  }
  fail(where_in, "unknown pre_tokenizer type '" + type + "'");
}

const std::vector<char32_t>& bytes_to_chars() {
  static const std::vector<char32_t> table = [] {
    std::vector<char32_t> t(256);
    std::vector<bool> direct(256, false);
    for (int b = '!'; b <= '~'; ++b) direct[b] = true;
    for (int b = 0xA1; b <= 0xAC; ++b) direct[b] = true;
    for (int b = 0xAE; b <= 0xFF; ++b) direct[b] = true;
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) t[b] = direct[b] ? static_cast<char32_t>(b) : next++;
    return t;
  }();
  return table;
}

const std::unordered_map<char32_t, uint8_t>& chars_to_bytes() {
  static const std::unordered_map<char32_t, uint8_t> m = [] {
    std::unordered_map<char32_t, uint8_t> r;
    const auto& t = bytes_to_chars();
    for (int b = 0; b < 256; ++b) r[t[b]] = static_cast<uint8_t>(b);
    return r;
  }();
  return m;
}

}  // namespace peft::tok
