#include <utf8proc.h>

#include "tokenizer/components.h"

namespace peft::tok {

void fail(const std::string& where, const std::string& what) { throw std::runtime_error(where + ": " + what); }

namespace {

void lowercase(char32_t c, std::u32string& out) {
  // Rust's char::to_lowercase; U+0130 is the one unconditional multi-char mapping.
  if (c == 0x130) {
    out += U'i';
    out += char32_t{0x307};
    return;
  }
  out += static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(c)));
}

class FormNormalizer : public Normalizer {
 public:
  explicit FormNormalizer(int opts) : opts_(opts) {}
  void normalize(NormalizedString& s) const override { s.normalize_form(opts_); }

 private:
  int opts_;
};

class Lowercase : public Normalizer {
 public:
  void normalize(NormalizedString& s) const override { s.map_chars(lowercase); }
};

// The StripAccents normalizer drops every combining mark (Mn, Mc, Me); BertNormalizer's
// strip_accents only the nonspacing ones (Mn). Both as tokenizers does.
class StripAccents : public Normalizer {
 public:
  void normalize(NormalizedString& s) const override {
    s.map_chars([](char32_t c, std::u32string& out) {
      if (!is_combining_mark(c)) out += c;
    });
  }
};

class BertNormalizer : public Normalizer {
 public:
  explicit BertNormalizer(const Json& j)
      : clean_(j.value("clean_text", true)),
        chinese_(j.value("handle_chinese_chars", true)),
        lower_(j.value("lowercase", true)) {
    auto sa = j.value("strip_accents", Json());
    strip_ = sa.is_boolean() ? sa.get<bool>() : lower_;
  }
  void normalize(NormalizedString& s) const override {
    if (clean_)
      s.map_chars([](char32_t c, std::u32string& out) {
        if (c == 0 || c == 0xFFFD || is_control(c)) return;
        out += is_whitespace(c) ? U' ' : c;
      });
    if (chinese_)
      s.map_chars([](char32_t c, std::u32string& out) {
        if (is_chinese_char(c)) {
          out += U' ';
          out += c;
          out += U' ';
        } else {
          out += c;
        }
      });
    if (strip_) {
      s.normalize_form(UTF8PROC_DECOMPOSE);
      s.map_chars([](char32_t c, std::u32string& out) {
        if (!is_mark_nonspacing(c)) out += c;
      });
    }
    if (lower_) s.map_chars(lowercase);
  }

 private:
  bool clean_, chinese_, lower_, strip_;
};

class Prepend : public Normalizer {
 public:
  explicit Prepend(std::string p) : p_(std::move(p)) {}
  void normalize(NormalizedString& s) const override { s.prepend(p_); }

 private:
  std::string p_;
};

// Pattern in tokenizer.json: {"String": "..."} or {"Regex": "..."}.
std::pair<std::string, bool> read_pattern(const Json& j, const std::string& where) {
  if (j.contains("String")) return {j["String"].get<std::string>(), false};
  if (j.contains("Regex")) return {j["Regex"].get<std::string>(), true};
  fail(where, "pattern must have 'String' or 'Regex'");
}

class Replace : public Normalizer {
 public:
  Replace(const Json& j, const std::string& where) {
    std::tie(pattern_, regex_) = read_pattern(j.at("pattern"), where);
    content_ = j.at("content").get<std::string>();
  }
  void normalize(NormalizedString& s) const override { s.replace(pattern_, regex_, content_); }

 private:
  std::string pattern_, content_;
  bool regex_;
};

class Strip : public Normalizer {
 public:
  explicit Strip(const Json& j) : left_(j.value("strip_left", true)), right_(j.value("strip_right", true)) {}
  void normalize(NormalizedString& s) const override { s.strip(left_, right_); }

 private:
  bool left_, right_;
};

class Sequence : public Normalizer {
 public:
  Sequence(const Json& j, const std::string& where) {
    for (const auto& n : j.at("normalizers")) items_.push_back(make_normalizer(n, where));
  }
  void normalize(NormalizedString& s) const override {
    for (const auto& n : items_) n->normalize(s);
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> items_;
};

}  // namespace

std::unique_ptr<Normalizer> make_normalizer(const Json& j, const std::string& where_in) {
  if (j.is_null()) return nullptr;
  const std::string type = j.value("type", std::string());
  const std::string where = where_in + ": normalizer " + type;
  try {
    if (type == "NFC") return std::make_unique<FormNormalizer>(UTF8PROC_COMPOSE);
    if (type == "NFD") return std::make_unique<FormNormalizer>(UTF8PROC_DECOMPOSE);
    if (type == "NFKC") return std::make_unique<FormNormalizer>(UTF8PROC_COMPOSE | UTF8PROC_COMPAT);
    if (type == "NFKD") return std::make_unique<FormNormalizer>(UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT);
    if (type == "Lowercase") return std::make_unique<Lowercase>();
    if (type == "StripAccents") return std::make_unique<StripAccents>();
    if (type == "BertNormalizer") return std::make_unique<BertNormalizer>(j);
    if (type == "Prepend") return std::make_unique<Prepend>(j.at("prepend").get<std::string>());
    if (type == "Replace") return std::make_unique<Replace>(j, where);
    if (type == "Strip") return std::make_unique<Strip>(j);
    if (type == "Sequence") return std::make_unique<Sequence>(j, where_in);
    if (type == "Precompiled") return make_precompiled(j, where);
  } catch (const nlohmann::json::exception& e) {
    fail(where, e.what());
  }
  fail(where_in, "unknown normalizer type '" + type + "'");
}

}  // namespace peft::tok
