#include "tokenizer/components.h"
#include "util/regex.h"

namespace peft::tok {

namespace {

class ByteLevelDec : public Decoder {
 public:
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    std::string bytes;
    const auto& m = chars_to_bytes();
    for (const auto& t : tokens)
      for (char32_t c : decode_utf8(t)) {
        auto it = m.find(c);
        if (it != m.end()) bytes.push_back(static_cast<char>(it->second));
        else append_utf8(bytes, c);
      }
    // from_utf8_lossy: invalid sequences become U+FFFD.
    std::string out;
    for (char32_t c : decode_utf8(bytes)) append_utf8(out, c);
    return {out};
  }
};

class MetaspaceDec : public Decoder {
 public:
  explicit MetaspaceDec(const Json& j) {
    replacement_ = j.value("replacement", std::string("\u2581"));
    if (j.contains("prepend_scheme")) prepend_ = j["prepend_scheme"].get<std::string>() != "never";
    else prepend_ = j.value("add_prefix_space", true);
  }
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string& t = tokens[i];
      std::string r;
      for (size_t p = 0; p < t.size();) {
        if (t.compare(p, replacement_.size(), replacement_) == 0) {
          r += ' ';
          p += replacement_.size();
        } else {
          r += t[p++];
        }
      }
      if (i == 0 && prepend_ && !r.empty() && r[0] == ' ') r.erase(0, 1);
      t = r;
    }
    return tokens;
  }

 private:
  std::string replacement_;
  bool prepend_;
};

class WordPieceDec : public Decoder {
 public:
  explicit WordPieceDec(const Json& j)
      : prefix_(j.value("prefix", std::string("##"))), cleanup_(j.value("cleanup", true)) {}
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string& t = tokens[i];
      if (i != 0) {
        if (t.rfind(prefix_, 0) == 0) t.erase(0, prefix_.size());
        else t = " " + t;
      }
      if (cleanup_) {
        static const std::pair<const char*, const char*> kRules[] = {
            {" .", "."},     {" ?", "?"},     {" !", "!"},         {" ,", ","},         {" ' ", "'"},   {" n't", "n't"},
            {" 'm", "'m"}, {" do not", " don't"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
        for (const auto& [a, b] : kRules) t = replace_all(t, a, b);
      }
    }
    return tokens;
  }

 private:
  std::string prefix_;
  bool cleanup_;
};

class ByteFallbackDec : public Decoder {
 public:
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    std::vector<std::string> out;
    std::string pending;
    auto flush = [&] {
      if (pending.empty()) return;
      if (valid_utf8(pending)) out.push_back(pending);
      else
        for (size_t i = 0; i < pending.size(); ++i) out.push_back("\xEF\xBF\xBD");
      pending.clear();
    };
    for (auto& t : tokens) {
      if (t.size() == 6 && t.rfind("<0x", 0) == 0 && t.back() == '>' && isxdigit(t[3]) && isxdigit(t[4])) {
        pending.push_back(static_cast<char>(std::stoi(t.substr(3, 2), nullptr, 16)));
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    return out;
  }
};

class FuseDec : public Decoder {
 public:
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    std::string s;
    for (const auto& t : tokens) s += t;
    return {s};
  }
};

class StripDec : public Decoder {
 public:
  explicit StripDec(const Json& j)
      : content_(decode_utf8(j.at("content").get<std::string>()).at(0)),
        start_(j.value("start", size_t{0})),
        stop_(j.value("stop", size_t{0})) {}
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    for (auto& t : tokens) {
      auto cps = decode_utf8(t);
      size_t a = 0, b = 0;
      while (a < cps.size() && a < start_ && cps[a] == content_) ++a;
      while (b < cps.size() && b < stop_ && cps[cps.size() - 1 - b] == content_) ++b;
      // tokenizers takes (bytes - cuts) chars here; for ASCII that is chars - cuts.
      const size_t take = t.size() >= a + b ? t.size() - a - b : 0;
      std::string r;
      for (size_t i = a; i < cps.size() && i - a < take; ++i) append_utf8(r, cps[i]);
      t = r;
    }
    return tokens;
  }

 private:
  char32_t content_;
  size_t start_, stop_;
};

class ReplaceDec : public Decoder {
 public:
  ReplaceDec(const Json& j, const std::string& where) {
    const auto& p = j.at("pattern");
    if (p.contains("String")) pattern_ = p["String"].get<std::string>();
    else if (p.contains("Regex")) re_ = std::make_unique<Regex>(p["Regex"].get<std::string>());
    else fail(where, "pattern must have 'String' or 'Regex'");
    content_ = j.at("content").get<std::string>();
  }
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    for (auto& t : tokens) {
      if (!re_) {
        t = replace_all(t, pattern_, content_);
        continue;
      }
      std::string r;
      size_t last = 0;
      for (const auto& [b, e] : re_->find_all(t)) {
        r.append(t, last, b - last);
        r += content_;
        last = e;
      }
      r.append(t, last, std::string::npos);
      t = r;
    }
    return tokens;
  }

 private:
  std::string pattern_, content_;
  std::unique_ptr<Regex> re_;
};

class BPEDec : public Decoder {
 public:
  explicit BPEDec(const Json& j) : suffix_(j.value("suffix", std::string("</w>"))) {}
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i)
      tokens[i] = replace_all(tokens[i], suffix_, i + 1 == tokens.size() ? "" : " ");
    return tokens;
  }

 private:
  std::string suffix_;
};

class SequenceDec : public Decoder {
 public:
  SequenceDec(const Json& j, const std::string& where) {
    for (const auto& d : j.at("decoders")) items_.push_back(make_decoder(d, where));
  }
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    for (const auto& d : items_) tokens = d->decode_chain(std::move(tokens));
    return tokens;
  }

 private:
  std::vector<std::unique_ptr<Decoder>> items_;
};

}  // namespace

std::unique_ptr<Decoder> make_decoder(const Json& j, const std::string& where_in) {
  if (j.is_null()) return nullptr;
  const std::string type = j.value("type", std::string());
  const std::string where = where_in + ": decoder " + type;
  try {
    if (type == "ByteLevel") return std::make_unique<ByteLevelDec>();
    if (type == "Metaspace") return std::make_unique<MetaspaceDec>(j);
    if (type == "WordPiece") return std::make_unique<WordPieceDec>(j);
    if (type == "ByteFallback") return std::make_unique<ByteFallbackDec>();
    if (type == "Fuse") return std::make_unique<FuseDec>();
    if (type == "Strip") return std::make_unique<StripDec>(j);
    if (type == "Replace") return std::make_unique<ReplaceDec>(j, where);
    if (type == "BPEDecoder") return std::make_unique<BPEDec>(j);
    if (type == "Sequence") return std::make_unique<SequenceDec>(j, where_in);
  } catch (const nlohmann::json::exception& e) {
    fail(where, e.what());
  }
  fail(where_in, "unknown decoder type '" + type + "'");
}

}  // namespace peft::tok
