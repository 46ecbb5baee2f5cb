#include "tokenizer/components.h"

namespace peft::tok {

void append_encoding(Encoding& dst, const Encoding& src) {
  dst.ids.insert(dst.ids.end(), src.ids.begin(), src.ids.end());
  dst.tokens.insert(dst.tokens.end(), src.tokens.begin(), src.tokens.end());
  dst.offsets.insert(dst.offsets.end(), src.offsets.begin(), src.offsets.end());
  dst.type_ids.insert(dst.type_ids.end(), src.type_ids.begin(), src.type_ids.end());
  dst.special_tokens_mask.insert(dst.special_tokens_mask.end(), src.special_tokens_mask.begin(),
                                 src.special_tokens_mask.end());
  dst.attention_mask.insert(dst.attention_mask.end(), src.attention_mask.begin(), src.attention_mask.end());
}

namespace {

void push_special(Encoding& e, int64_t id, const std::string& token, int64_t type_id) {
  e.ids.push_back(id);
  e.tokens.push_back(token);
  e.offsets.emplace_back(0, 0);
  e.type_ids.push_back(type_id);
  e.special_tokens_mask.push_back(1);
  e.attention_mask.push_back(1);
}

Encoding with_type(Encoding e, int64_t type_id) {
  std::fill(e.type_ids.begin(), e.type_ids.end(), type_id);
  return e;
}

Encoding concat(Encoding a, Encoding* b) {
  if (b) append_encoding(a, *b);
  return a;
}

// ByteLevel's offset trimming: leading/trailing (byte-level) spaces leave the offsets.
void trim_offsets(Encoding& e, bool add_prefix_space) {
  const char32_t space = bytes_to_chars()[' '];
  auto is_space = [&](char32_t c) { return c == space || is_whitespace(c); };
  for (size_t i = 0; i < e.tokens.size(); ++i) {
    auto cps = decode_utf8(e.tokens[i]);
    size_t lead = 0, trail = 0;
    while (lead < cps.size() && is_space(cps[lead])) ++lead;
    while (trail < cps.size() && is_space(cps[cps.size() - 1 - trail])) ++trail;
    auto& [s, t] = e.offsets[i];
    if (lead > 0) {
      const bool first = i == 0 || s == 0;
      if (first && add_prefix_space && lead == 1) lead = 0;
      s = std::min(s + lead, t);
    }
    if (trail > 0 && t >= trail) t = std::max(t - trail, s);
  }
}

class Template : public PostProcessor {
 public:
  Template(const Json& j, const std::string& where) {
    for (const auto& [name, tok] : j.at("special_tokens").items()) {
      const auto& ids = tok.at("ids");
      const auto& toks = tok.at("tokens");
      if (ids.size() != toks.size()) fail(where, "special token '" + name + "' has unequal ids and tokens");
      specials_[name] = {ids.get<std::vector<int64_t>>(), toks.get<std::vector<std::string>>()};
    }
    single_ = read(j.at("single"), where);
    pair_ = read(j.at("pair"), where);
  }
  size_t added_tokens(bool pair) const override {
    size_t n = 0;
    for (const auto& p : pair ? pair_ : single_)
      if (p.special) n += specials_.at(p.name).first.size();
    return n;
  }
  Encoding process(Encoding a, Encoding* b, bool add) const override {
    if (!add) return concat(std::move(a), b);
    Encoding out;
    for (const auto& p : b ? pair_ : single_) {
      if (p.special) {
        const auto& [ids, toks] = specials_.at(p.name);
        for (size_t i = 0; i < ids.size(); ++i) push_special(out, ids[i], toks[i], p.type_id);
      } else {
        append_encoding(out, with_type(p.name == "A" ? a : *b, p.type_id));
      }
    }
    return out;
  }

 private:
  struct Piece {
    bool special;
    std::string name;  // special token name, or "A" / "B"
    int64_t type_id;
  };
  std::vector<Piece> read(const Json& t, const std::string& where) {
    std::vector<Piece> out;
    for (const auto& p : t) {
      if (p.contains("SpecialToken")) {
        const auto name = p["SpecialToken"].at("id").get<std::string>();
        if (!specials_.count(name)) fail(where, "template names special token '" + name + "' it does not define");
        out.push_back({true, name, p["SpecialToken"].value("type_id", int64_t{0})});
      } else if (p.contains("Sequence")) {
        out.push_back({false, p["Sequence"].at("id").get<std::string>(), p["Sequence"].value("type_id", int64_t{0})});
      } else {
        fail(where, "template piece is neither SpecialToken nor Sequence");
      }
    }
    return out;
  }
  std::map<std::string, std::pair<std::vector<int64_t>, std::vector<std::string>>> specials_;
  std::vector<Piece> single_, pair_;
};

// BertProcessing / RobertaProcessing: cls A sep [sep] B sep.
class ClsSep : public PostProcessor {
 public:
  ClsSep(const Json& j, bool roberta) : roberta_(roberta) {
    // at(): a const json's [] does not check bounds.
    cls_ = {j.at("cls").at(0).get<std::string>(), j.at("cls").at(1).get<int64_t>()};
    sep_ = {j.at("sep").at(0).get<std::string>(), j.at("sep").at(1).get<int64_t>()};
    trim_ = roberta && j.value("trim_offsets", true);
    prefix_space_ = j.value("add_prefix_space", true);
  }
  size_t added_tokens(bool pair) const override { return pair ? (roberta_ ? 4 : 3) : 2; }
  Encoding process(Encoding a, Encoding* b, bool add) const override {
    if (trim_) {
      trim_offsets(a, prefix_space_);
      if (b) trim_offsets(*b, prefix_space_);
    }
    if (!add) return concat(std::move(a), b);
    Encoding out;
    push_special(out, cls_.second, cls_.first, 0);
    append_encoding(out, with_type(a, 0));
    push_special(out, sep_.second, sep_.first, 0);
    if (b) {
      const int64_t t = roberta_ ? 0 : 1;
      if (roberta_) push_special(out, sep_.second, sep_.first, t);
      append_encoding(out, with_type(*b, t));
      push_special(out, sep_.second, sep_.first, t);
    }
    return out;
  }

 private:
  bool roberta_, trim_, prefix_space_;
  std::pair<std::string, int64_t> cls_, sep_;
};

class ByteLevelPost : public PostProcessor {
 public:
  explicit ByteLevelPost(const Json& j)
      : trim_(j.value("trim_offsets", true)), prefix_space_(j.value("add_prefix_space", true)) {}
  size_t added_tokens(bool) const override { return 0; }
  Encoding process(Encoding a, Encoding* b, bool) const override {
    if (trim_) {
      trim_offsets(a, prefix_space_);
      if (b) trim_offsets(*b, prefix_space_);
    }
    return concat(std::move(a), b);
  }

 private:
  bool trim_, prefix_space_;
};

class SequencePost : public PostProcessor {
 public:
  SequencePost(const Json& j, const std::string& where) {
    for (const auto& p : j.at("processors")) items_.push_back(make_post_processor(p, where));
  }
  size_t added_tokens(bool pair) const override {
    size_t n = 0;
    for (const auto& p : items_) n += p->added_tokens(pair);
    return n;
  }
  Encoding process(Encoding a, Encoding* b, bool add) const override {
    // Offsets first (ByteLevel), then special tokens, on the pair as given.
    for (size_t i = 0; i + 1 < items_.size(); ++i) {
      a = items_[i]->process(std::move(a), nullptr, add);
      if (b) *b = items_[i]->process(std::move(*b), nullptr, add);
    }
    return items_.back()->process(std::move(a), b, add);
  }

 private:
  std::vector<std::unique_ptr<PostProcessor>> items_;
};

}  // namespace

std::unique_ptr<PostProcessor> make_post_processor(const Json& j, const std::string& where_in) {
  if (j.is_null()) return nullptr;
  const std::string type = j.value("type", std::string());
  const std::string where = where_in + ": post_processor " + type;
  try {
    if (type == "TemplateProcessing") return std::make_unique<Template>(j, where);
    if (type == "BertProcessing") return std::make_unique<ClsSep>(j, false);
    if (type == "RobertaProcessing") return std::make_unique<ClsSep>(j, true);
    if (type == "ByteLevel") return std::make_unique<ByteLevelPost>(j);
    if (type == "Sequence") return std::make_unique<SequencePost>(j, where_in);
  } catch (const nlohmann::json::exception& e) {
    fail(where, e.what());
  }
  fail(where_in, "unknown post_processor type '" + type + "'");
}

}  // namespace peft::tok
