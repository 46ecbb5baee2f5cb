#include "peft/tokenizer.h"

#include <utf8proc.h>

#include <algorithm>
#include <filesystem>
#include <mutex>
#include <fstream>
#include <sstream>

#include "peft/gguf.h"
#include "peft/jinja.h"
#include "peft/gguf_llama.h"
#include "tokenizer/components.h"
#include "tokenizer/marian.h"
#include "util/json_file.h"

namespace fs = std::filesystem;

namespace peft {

using namespace tok;

struct AddedToken {
  int64_t id;
  std::string content;
  bool single_word, lstrip, rstrip, special;
};

struct Tokenizer::Impl {
  std::string where;
  std::unique_ptr<Normalizer> normalizer;
  std::unique_ptr<PreTokenizer> pre_tokenizer;
  std::unique_ptr<tok::Model> model;
  std::unique_ptr<tok::Model> target_model;  // encode_target's, where it differs (Marian)
  std::unique_ptr<PostProcessor> post_processor;
  std::unique_ptr<Decoder> decoder;
  std::vector<AddedToken> added;  // longest content first, for leftmost-longest matching
  std::unordered_map<int64_t, const AddedToken*> added_by_id;
  std::unordered_map<std::string, const AddedToken*> added_by_content;
  std::optional<size_t> truncation;
  std::optional<PaddingOptions> padding;
  std::map<std::string, std::string> roles;  // tokenizer_config.json: bos_token, ...
  std::optional<std::string> chat_template;  // tokenizer_config.json or chat_template.jinja
  mutable std::mutex chat_mu;
  mutable std::shared_ptr<ChatTemplate> parsed_chat;  // parsed on first use

  // Added tokens found in `text`, as (begin, end, token), left to right.
  std::vector<std::tuple<size_t, size_t, const AddedToken*>> find_added(const std::string& text) const;
  Encoding encode_one(const std::string& text) const { return encode_one(text, *model); }
  // Truncation and the post-processor's special tokens.
  Encoding finish(Encoding e, bool add_special_tokens) const;
  Encoding encode_one(const std::string& text, const tok::Model& with) const;
};

namespace {

// Sorts the added tokens longest first (for leftmost-longest matching) and indexes them.
void index_added(Tokenizer::Impl& impl) {
  std::stable_sort(impl.added.begin(), impl.added.end(),
                   [](const AddedToken& x, const AddedToken& y) { return x.content.size() > y.content.size(); });
  for (const auto& a : impl.added) {
    impl.added_by_id[a.id] = &a;
    impl.added_by_content[a.content] = &a;
  }
}

// Added tokens' single_word boundary: a letter, digit or '_' (Rust's is_alphanumeric).
bool is_word_char(char32_t c) { return c == '_' || is_alphanumeric(c); }

// The char ending right before byte `at`, and the one starting at `at` (0 if none).
char32_t char_before(const std::string& s, size_t at) {
  if (at == 0) return 0;
  size_t b = at - 1;
  while (b > 0 && (static_cast<unsigned char>(s[b]) & 0xC0) == 0x80) --b;
  return decode_utf8(s.substr(b, at - b)).back();
}
char32_t char_at(const std::string& s, size_t at) {
  if (at >= s.size()) return 0;
  return decode_utf8(s.substr(at, utf8_len(static_cast<unsigned char>(s[at])))).front();
}

}  // namespace

std::vector<std::tuple<size_t, size_t, const AddedToken*>> Tokenizer::Impl::find_added(const std::string& text) const {
  std::vector<std::tuple<size_t, size_t, const AddedToken*>> out;
  if (added.empty()) return out;
  // Each token's next occurrence at or after `pos`, found again only once `pos` passes
  // it: every token scans the text once in all, not once per match.
  std::vector<size_t> next(added.size(), 0);
  std::vector<bool> stale(added.size(), true);
  auto occurrence = [&](size_t i, size_t pos) {
    const auto& t = added[i];
    if (!stale[i] && (next[i] == std::string::npos || next[i] >= pos)) return next[i];
    size_t at = text.find(t.content, pos);
    while (at != std::string::npos && t.single_word) {
      const char32_t before = char_before(text, at), after = char_at(text, at + t.content.size());
      if ((!before || !is_word_char(before)) && (!after || !is_word_char(after))) break;
      at = text.find(t.content, at + 1);
    }
    stale[i] = false;
    return next[i] = at;
  };
  size_t pos = 0;
  while (pos < text.size()) {
    // Leftmost match; the longest among those starting there.
    size_t best_at = std::string::npos;
    const AddedToken* best = nullptr;
    for (size_t i = 0; i < added.size(); ++i) {
      const auto& t = added[i];
      if (t.content.empty()) continue;
      const size_t at = occurrence(i, pos);
      if (at == std::string::npos) continue;
      if (at < best_at || (at == best_at && t.content.size() > best->content.size())) {
        best_at = at;
        best = &t;
      }
    }
    if (!best) break;
    size_t b = best_at, e = best_at + best->content.size();
    if (best->lstrip)
      while (b > pos && is_whitespace(static_cast<unsigned char>(text[b - 1]))) --b;
    if (best->rstrip)
      while (e < text.size() && is_whitespace(static_cast<unsigned char>(text[e]))) ++e;
    out.emplace_back(b, e, best);
    pos = e;
  }
  return out;
}

Encoding Tokenizer::Impl::encode_one(const std::string& text, const tok::Model& with) const {
  Encoding enc;
  auto push = [&](int64_t id, std::string tok, Range off) {
    enc.ids.push_back(id);
    enc.tokens.push_back(std::move(tok));
    enc.offsets.push_back(off);
    enc.type_ids.push_back(0);
    enc.special_tokens_mask.push_back(0);
    enc.attention_mask.push_back(1);
  };
  auto encode_segment = [&](size_t b, size_t e) {
    if (e <= b) return;
    std::vector<NormalizedString> pieces;
    {
      NormalizedString ns(text.substr(b, e - b), b);
      if (normalizer) normalizer->normalize(ns);
      pieces.push_back(std::move(ns));
    }
    if (pre_tokenizer) pre_tokenizer->split(pieces);
    // Piece by piece, each freed once tokenized: a long text never holds its pieces and
    // all its tokens at once.
    std::vector<Token> toks;
    for (auto& p : pieces) {
      if (!p.empty()) with.tokenize(p, toks);
      for (auto& t : toks) push(t.id, std::move(t.value), t.offsets);
      toks.clear();
      p = NormalizedString();
    }
  };
  size_t last = 0;
  for (const auto& [b, e, t] : find_added(text)) {
    encode_segment(last, b);
    push(t->id, t->content, {b, e});
    last = e;
  }
  encode_segment(last, text.size());
  return enc;
}

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;

Tokenizer Tokenizer::from_json(const std::string& text, const std::string& where) {
  const Json j = parse_json(text, where);
  try {
    return build(j, where);
  } catch (const nlohmann::json::exception& e) {
    // A field of the wrong type deep in a component: name the file, keep one line.
    std::string what = e.what();
    if (auto p = what.find("] "); p != std::string::npos) what = what.substr(p + 2);
    fail(where, "malformed tokenizer.json: " + what);
  }
}

Tokenizer Tokenizer::build(const nlohmann::json& j, const std::string& where) {
  if (!j.is_object()) fail(where, "not a JSON object");
  if (!j.contains("model") || j["model"].is_null()) fail(where, "missing 'model'");
  auto impl = std::make_unique<Impl>();
  impl->where = where;
  impl->normalizer = make_normalizer(j.value("normalizer", Json()), where);
  impl->pre_tokenizer = make_pre_tokenizer(j.value("pre_tokenizer", Json()), where);
  impl->model = make_model(j["model"], where);
  impl->post_processor = make_post_processor(j.value("post_processor", Json()), where);
  impl->decoder = make_decoder(j.value("decoder", Json()), where);
  for (const auto& a : j.value("added_tokens", Json::array())) {
    try {
      impl->added.push_back({a.at("id").get<int64_t>(), a.at("content").get<std::string>(), a.value("single_word", false),
                             a.value("lstrip", false), a.value("rstrip", false), a.value("special", false)});
    } catch (const nlohmann::json::exception& e) {
      fail(where, std::string("bad entry in added_tokens: ") + e.what());
    }
  }
  index_added(*impl);
  if (j.contains("truncation") && j["truncation"].is_object())
    impl->truncation = static_cast<size_t>(std::clamp<int64_t>(
        strict_get<int64_t>(j["truncation"].value("max_length", Json(512)), where + ": truncation max_length"), 0,
        int64_t{1} << 40));
  if (j.contains("padding") && j["padding"].is_object()) {
    PaddingOptions p;
    const auto& pj = j["padding"];
    p.pad_id = pj.value("pad_id", int64_t{0});
    p.pad_token = pj.value("pad_token", std::string("[PAD]"));
    p.pad_type_id = pj.value("pad_type_id", int64_t{0});
    p.left = pj.value("direction", std::string("Right")) == "Left";
    // Lengths size allocations in encode_batch: integers within bounds.
    auto length = [&](const Json& v, const char* key) {
      const int64_t n = strict_get<int64_t>(v, where + ": padding " + key);
      if (n < 0 || n > (int64_t{1} << 24)) fail(where, std::string("padding ") + key + " is out of range");
      return static_cast<size_t>(n);
    };
    if (pj.contains("strategy") && pj["strategy"].is_object() && pj["strategy"].contains("Fixed"))
      p.length = length(pj["strategy"]["Fixed"], "Fixed");
    if (pj.contains("pad_to_multiple_of") && pj["pad_to_multiple_of"].is_number())
      p.pad_to_multiple_of = length(pj["pad_to_multiple_of"], "pad_to_multiple_of");
    impl->padding = p;
  }
  return Tokenizer(std::move(impl));
}

namespace {
bool is_gguf(const fs::path& p) { return p.extension() == ".gguf" && fs::is_regular_file(p); }
}  // namespace

void Tokenizer::apply_config(const nlohmann::json& cfg) {
  if (!cfg.is_object()) return;
  for (const char* role : {"bos_token", "eos_token", "pad_token", "unk_token", "sep_token", "cls_token", "mask_token"}) {
    if (!cfg.contains(role)) continue;
    const auto& v = cfg.at(role);
    if (v.is_string()) impl_->roles[role] = v.get<std::string>();
    else if (v.is_object() && v.contains("content") && v.at("content").is_string())
      impl_->roles[role] = v.at("content").get<std::string>();
  }
  if (cfg.contains("chat_template") && cfg.at("chat_template").is_string())
    impl_->chat_template = cfg.at("chat_template").get<std::string>();
}

Tokenizer Tokenizer::from_file(const std::string& path) {
  fs::path file = path;
  fs::path dir = file;
  if (is_marian_folder(path)) {
    // MarianTokenizer's files (source.spm, vocab.json, ...): no tokenizer.json exists for
    // them, and none could say what the SentencePiece library does.
    MarianParts m = load_marian(path);
    auto impl = std::make_unique<Impl>();
    impl->where = (dir / "source.spm").string();
    impl->model = std::move(m.model);
    impl->target_model = std::move(m.target_model);
    impl->decoder = std::move(m.decoder);
    impl->post_processor = make_post_processor(m.post_processor, impl->where);
    for (const auto& [content, id] : m.specials) impl->added.push_back({id, content, false, false, false, true});
    index_added(*impl);
    Tokenizer t(std::move(impl));
    t.apply_config(m.config);
    return t;
  }
  if (fs::is_directory(file)) {
    file /= "tokenizer.json";
    // A folder holding only a GGUF model: its tokenizer is in the file's metadata.
    if (!fs::exists(file))
      for (const auto& e : fs::directory_iterator(dir))
        if (is_gguf(e.path())) return from_gguf(e.path().string());
  } else {
    if (is_gguf(file)) return from_gguf(path);
    dir = file.parent_path();
  }
  Tokenizer t = from_json(read_file_bytes(file.string()), file.string());
  const fs::path cfg_path = dir / "tokenizer_config.json";
  if (fs::exists(cfg_path)) t.apply_config(read_json_file(cfg_path.string()));
  // transformers 4.43+ may keep the template in its own file.
  const fs::path jinja = dir / "chat_template.jinja";
  if (fs::exists(jinja)) t.impl_->chat_template = read_file_bytes(jinja.string());
  return t;
}

Tokenizer Tokenizer::from_gguf(const std::string& path) {
  const GgufFile file(path);
  const HfTokenizerFiles hf = hf_tokenizer_from_gguf(file.header());
  Tokenizer t = from_json(hf.tokenizer.dump(), path);
  t.apply_config(nlohmann::json::parse(hf.tokenizer_config.dump()));
  return t;
}

std::optional<std::string> Tokenizer::chat_template() const { return impl_->chat_template; }

namespace {
// TRL's setup_chat_format: ChatML, for a tokenizer that brings no template.
const char* kChatML =
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + "
    "'\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
}  // namespace

std::string Tokenizer::apply_chat_template(const nlohmann::ordered_json& messages, bool add_generation_prompt) const {
  {
    std::lock_guard<std::mutex> lock(impl_->chat_mu);
    if (!impl_->parsed_chat)
      impl_->parsed_chat = std::make_shared<ChatTemplate>(ChatTemplate::parse(
          impl_->chat_template.value_or(kChatML), impl_->where + ": chat_template"));
  }
  nlohmann::ordered_json special = nlohmann::ordered_json::object();
  for (const auto& [role, token] : impl_->roles) special[role] = token;
  return render_chat(*impl_->parsed_chat, messages, add_generation_prompt, special);
}

namespace {
void truncate(Encoding& e, size_t n) {
  if (e.ids.size() <= n) return;
  e.ids.resize(n);
  e.tokens.resize(n);
  e.offsets.resize(n);
  e.type_ids.resize(n);
  e.special_tokens_mask.resize(n);
  e.attention_mask.resize(n);
}
}  // namespace

namespace {
// Text must be UTF-8 (as a Python str always is): invalid bytes are an error naming where
// they are, never dropped or replaced silently.
void check_utf8(const std::string& text) {
  size_t i = 0;
  while (i < text.size()) {
    utf8proc_int32_t cp;
    const auto n = utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(text.data() + i),
                                    static_cast<utf8proc_ssize_t>(text.size() - i), &cp);
    if (n <= 0) throw std::invalid_argument("text is not valid UTF-8 (at byte " + std::to_string(i) + ")");
    i += static_cast<size_t>(n);
  }
}
}  // namespace

Encoding Tokenizer::encode(const std::string& text, bool add_special_tokens) const {
  check_utf8(text);
  return impl_->finish(impl_->encode_one(text), add_special_tokens);
}

Encoding Tokenizer::encode_target(const std::string& text, bool add_special_tokens) const {
  if (!impl_->target_model) return encode(text, add_special_tokens);
  check_utf8(text);
  return impl_->finish(impl_->encode_one(text, *impl_->target_model), add_special_tokens);
}

Encoding Tokenizer::Impl::finish(Encoding e, bool add_special_tokens) const {
  if (truncation) {
    const size_t room = add_special_tokens && post_processor ? post_processor->added_tokens(false) : 0;
    truncate(e, *truncation > room ? *truncation - room : 0);
  }
  if (post_processor) e = post_processor->process(std::move(e), nullptr, add_special_tokens);
  return e;
}

Encoding Tokenizer::encode_pair(const std::string& a, const std::string& b, bool add_special_tokens) const {
  check_utf8(a);
  check_utf8(b);
  Encoding ea = impl_->encode_one(a), eb = impl_->encode_one(b);
  std::fill(eb.type_ids.begin(), eb.type_ids.end(), 1);
  if (impl_->truncation) {
    // longest_first: drop from the longer sequence until the pair fits.
    const size_t room = add_special_tokens && impl_->post_processor ? impl_->post_processor->added_tokens(true) : 0;
    const size_t max = *impl_->truncation > room ? *impl_->truncation - room : 0;
    size_t na = ea.ids.size(), nb = eb.ids.size();
    while (na + nb > max) (na > nb ? na : nb)--;
    truncate(ea, na);
    truncate(eb, nb);
  }
  if (!impl_->post_processor) {
    append_encoding(ea, eb);
    return ea;
  }
  return impl_->post_processor->process(std::move(ea), &eb, add_special_tokens);
}

Encoding Tokenizer::encode_words(const std::vector<std::string>& words, bool add_special_tokens,
                                 std::vector<int64_t>* word_ids) const {
  Encoding e;
  std::vector<int64_t> ids_of_words;
  for (size_t w = 0; w < words.size(); ++w) {
    check_utf8(words[w]);
    const Encoding one = impl_->encode_one(words[w]);
    append_encoding(e, one);
    ids_of_words.insert(ids_of_words.end(), one.ids.size(), static_cast<int64_t>(w));
  }
  if (impl_->truncation) {
    const size_t room = add_special_tokens && impl_->post_processor ? impl_->post_processor->added_tokens(false) : 0;
    truncate(e, *impl_->truncation > room ? *impl_->truncation - room : 0);
    if (ids_of_words.size() > e.ids.size()) ids_of_words.resize(e.ids.size());
  }
  if (impl_->post_processor) e = impl_->post_processor->process(std::move(e), nullptr, add_special_tokens);
  if (word_ids) {
    // Post-processors keep the sequence's tokens in order (special_tokens_mask 0: encode_one
    // marks none) and add their own with mask 1.
    word_ids->assign(e.ids.size(), -1);
    size_t next = 0;
    for (size_t i = 0; i < e.ids.size() && next < ids_of_words.size(); ++i)
      if (!e.special_tokens_mask[i]) (*word_ids)[i] = ids_of_words[next++];
  }
  return e;
}

std::vector<Encoding> Tokenizer::encode_batch(const std::vector<std::string>& texts, bool add_special_tokens) const {
  std::vector<Encoding> out;
  out.reserve(texts.size());
  for (const auto& t : texts) out.push_back(encode(t, add_special_tokens));
  if (!impl_->padding) return out;
  const auto& p = *impl_->padding;
  size_t len = 0;
  for (const auto& e : out) len = std::max(len, e.ids.size());
  if (p.length) len = *p.length;
  if (p.pad_to_multiple_of > 0 && len % p.pad_to_multiple_of) len += p.pad_to_multiple_of - len % p.pad_to_multiple_of;
  for (auto& e : out) {
    if (e.ids.size() >= len) continue;
    const size_t n = len - e.ids.size();
    auto pad = [&](auto& v, auto value) { v.insert(p.left ? v.begin() : v.end(), n, value); };
    pad(e.ids, p.pad_id);
    pad(e.tokens, p.pad_token);
    pad(e.offsets, Range{0, 0});
    pad(e.type_ids, p.pad_type_id);
    pad(e.special_tokens_mask, int8_t{1});
    pad(e.attention_mask, int8_t{0});
  }
  return out;
}

std::string Tokenizer::decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  for (int64_t id : ids) {
    auto it = impl_->added_by_id.find(id);
    if (it != impl_->added_by_id.end()) {
      if (skip_special_tokens && it->second->special) continue;
      tokens.push_back(it->second->content);
      continue;
    }
    auto t = impl_->model->id_to_token(id);
    if (!t) throw std::out_of_range("decode: id " + std::to_string(id) + " is not in the vocabulary");
    tokens.push_back(*t);
  }
  if (!impl_->decoder) {
    std::string s;
    for (size_t i = 0; i < tokens.size(); ++i) s += (i ? " " : "") + tokens[i];
    return s;
  }
  std::string s;
  for (const auto& t : impl_->decoder->decode_chain(std::move(tokens))) s += t;
  return s;
}

void Tokenizer::enable_truncation(size_t max_length) { impl_->truncation = max_length; }
void Tokenizer::enable_padding(PaddingOptions opts) { impl_->padding = std::move(opts); }
void Tokenizer::no_truncation() { impl_->truncation.reset(); }
void Tokenizer::no_padding() { impl_->padding.reset(); }
std::optional<size_t> Tokenizer::truncation() const { return impl_->truncation; }
const std::optional<PaddingOptions>& Tokenizer::padding() const { return impl_->padding; }

std::optional<int64_t> Tokenizer::token_to_id(const std::string& token) const {
  auto it = impl_->added_by_content.find(token);
  if (it != impl_->added_by_content.end()) return it->second->id;
  return impl_->model->token_to_id(token);
}

std::optional<std::string> Tokenizer::id_to_token(int64_t id) const {
  auto it = impl_->added_by_id.find(id);
  if (it != impl_->added_by_id.end()) return it->second->content;
  return impl_->model->id_to_token(id);
}

size_t Tokenizer::vocab_size() const {
  size_t n = impl_->model->vocab_size();
  for (const auto& a : impl_->added)
    if (!impl_->model->token_to_id(a.content)) ++n;
  return n;
}

std::optional<std::string> Tokenizer::special_token(const std::string& role) const {
  auto it = impl_->roles.find(role);
  return it == impl_->roles.end() ? std::nullopt : std::optional<std::string>(it->second);
}

}  // namespace peft
