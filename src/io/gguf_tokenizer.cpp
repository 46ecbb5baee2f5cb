// tokenizer.json and tokenizer_config.json from a GGUF's tokenizer.ggml.* metadata,
// equal to what transformers 5.23 builds (integrations/gguf/gguf_tokenizer_mapping.py:
// byte_level_tokenizer / sentencepiece_tokenizer, then the special tokens, the split
// regex and TokenizersBackend's post-processor).
#include <algorithm>
#include <array>
#include <cmath>
#include <map>
#include <optional>
#include <unordered_map>

#include "io/gguf_internal.h"
#include "peft/gguf_llama.h"

namespace peft {
namespace {

using Json = nlohmann::ordered_json;

constexpr int64_t kControl = 3;      // llama.cpp token types
constexpr int64_t kUserDefined = 4;

// transformers' split regexes by tokenizer.ggml.pre (GGUF_PRE_TOKENIZER_SPLITS).
constexpr const char* kLlama3Split =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3})"
    R"(| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr const char* kTekkenSplit =
    R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+)"
    R"(|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*)"
    R"(|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr const char* kQwen2Split =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N})"
    R"(| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr const char* kQwen35Split =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N})"
    R"(| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr const char* kGpt4oSplit =
    R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?)"
    R"(|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?)"
    R"(|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

const char* split_regex(const std::string& pre) {
  static const std::map<std::string, const char*> kSplits = {
      {"llama3", kLlama3Split},   {"llama-v3", kLlama3Split},      {"llama-bpe", kLlama3Split},
      {"falcon3", kLlama3Split},  {"falcon-h1", kLlama3Split},     {"pixtral", kLlama3Split},
      {"midm-2.0", kLlama3Split}, {"lfm2", kLlama3Split},          {"jina-v5-nano", kLlama3Split},
      {"dbrx", kLlama3Split},     {"smaug-bpe", kLlama3Split},     {"tekken", kTekkenSplit},
      {"qwen2", kQwen2Split},     {"deepseek-r1-qwen", kQwen2Split}, {"kormo", kQwen2Split},
      {"f2llmv2", kQwen2Split},   {"megrez", kQwen2Split},         {"qwen35", kQwen35Split},
      {"gpt-4o", kGpt4oSplit},    {"llama4", kGpt4oSplit},         {"kanana2", kGpt4oSplit},
      {"talkie", kGpt4oSplit},    {"minimax-m2", kGpt4oSplit},
  };
  auto it = kSplits.find(pre);
  return it == kSplits.end() ? nullptr : it->second;
}

std::string utf8(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else if (cp < 0x800) {
    s += static_cast<char>(0xc0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3f));
  } else {
    s += static_cast<char>(0xe0 | (cp >> 12));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    s += static_cast<char>(0x80 | (cp & 0x3f));
  }
  return s;
}

// GPT-2's byte -> character map: printable Latin-1 bytes stand for themselves, the
// other 68 bytes for U+0100 onwards in byte order.
const std::array<std::string, 256>& byte_chars() {
  static const std::array<std::string, 256> table = [] {
    std::array<std::string, 256> t;
    uint32_t next = 256;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
      t[b] = utf8(printable ? b : next++);
    }
    return t;
  }();
  return table;
}

// Byte offsets where each character of valid UTF-8 `s` starts, plus s.size().
std::vector<size_t> char_starts(const std::string& s) {
  std::vector<size_t> at;
  for (size_t i = 0; i < s.size(); ++i)
    if ((static_cast<unsigned char>(s[i]) & 0xc0) != 0x80) at.push_back(i);
  at.push_back(s.size());
  return at;
}

// Whether every character of `s` is one of the 256 that spell bytes.
bool in_byte_alphabet(const std::string& s) {
  static const std::unordered_map<std::string, int> chars = [] {
    std::unordered_map<std::string, int> m;
    for (int b = 0; b < 256; ++b) m.emplace(byte_chars()[b], b);
    return m;
  }();
  const auto at = char_starts(s);
  for (size_t i = 0; i + 1 < at.size(); ++i)
    if (!chars.count(s.substr(at[i], at[i + 1] - at[i]))) return false;
  return true;
}

// The tokenizer.ggml.* inputs, checked.
struct Source {
  std::string where, arch, model, pre;
  std::vector<std::string> tokens;
  std::vector<int64_t> types;
  std::vector<double> scores;
  const std::vector<std::string>* merges = nullptr;
  std::optional<std::string> bos, eos, unk, pad;  // the tokens the *_token_id keys name
  std::optional<bool> add_bos, add_eos;
  std::optional<std::string> chat_template;
};

[[noreturn]] void fail(const std::string& where, const std::string& what) { throw GgufError(where + ": " + what); }

Source read_source(const GgufHeader& h) {
  const GgufMetadata& m = h.metadata;
  Source s;
  s.where = m.where();
  s.arch = m.get_string("general.architecture");
  s.model = m.get_string("tokenizer.ggml.model");
  if (m.contains("tokenizer.ggml.pre")) s.pre = m.get_string("tokenizer.ggml.pre");
  s.tokens = m.get_string_array("tokenizer.ggml.tokens");
  for (size_t i = 0; i < s.tokens.size(); ++i)
    if (!gguf_valid_utf8(s.tokens[i]))
      fail(s.where, "tokenizer.ggml.tokens[" + std::to_string(i) + "] is not valid UTF-8");
  if (m.contains("tokenizer.ggml.token_type")) s.types = m.get_int_array("tokenizer.ggml.token_type");
  if (m.contains("tokenizer.ggml.scores")) s.scores = m.get_float_array("tokenizer.ggml.scores");
  for (size_t i = 0; i < s.scores.size(); ++i)
    if (std::isnan(s.scores[i])) fail(s.where, "tokenizer.ggml.scores[" + std::to_string(i) + "] is NaN");
  if (m.contains("tokenizer.ggml.merges")) s.merges = &m.get_string_array("tokenizer.ggml.merges");
  auto named = [&](const char* key) -> std::optional<std::string> {
    if (!m.contains(key)) return std::nullopt;
    const int64_t id = m.get_int(key);
    if (id < 0 || id >= static_cast<int64_t>(s.tokens.size()))
      fail(s.where, std::string("metadata key '") + key + "': token id " + std::to_string(id) +
                        " is not in the vocabulary");
    return s.tokens[id];
  };
  s.bos = named("tokenizer.ggml.bos_token_id");
  s.eos = named("tokenizer.ggml.eos_token_id");
  s.unk = named("tokenizer.ggml.unknown_token_id");
  s.pad = named("tokenizer.ggml.padding_token_id");
  if (m.contains("tokenizer.ggml.add_bos_token")) s.add_bos = m.get_bool("tokenizer.ggml.add_bos_token");
  if (m.contains("tokenizer.ggml.add_eos_token")) s.add_eos = m.get_bool("tokenizer.ggml.add_eos_token");
  if (m.contains("tokenizer.chat_template")) s.chat_template = m.get_string("tokenizer.chat_template");
  if (s.chat_template && !gguf_valid_utf8(*s.chat_template))
    fail(s.where, "tokenizer.chat_template is not valid UTF-8");
  return s;
}

// The BPE vocabulary: token -> id, a later duplicate winning as in a Python dict.
struct Vocab {
  std::vector<std::string> spelled;  // by id
  std::unordered_map<std::string, int64_t> ids;
};

Vocab make_vocab(const Source& s, bool byte_level) {
  Vocab v;
  v.spelled.reserve(s.tokens.size());
  for (const auto& t : s.tokens) {
    if (!byte_level || in_byte_alphabet(t)) {
      v.spelled.push_back(t);
      continue;
    }
    std::string respelled;  // a token written in plain UTF-8: spell its bytes
    for (unsigned char c : t) respelled += byte_chars()[c];
    v.spelled.push_back(respelled);
  }
  for (size_t i = 0; i < v.spelled.size(); ++i) v.ids[v.spelled[i]] = static_cast<int64_t>(i);
  return v;
}

using Merge = std::pair<std::string, std::string>;

// transformers' generate_merges(vocab, scores): every split of every token into two
// tokens of the vocabulary, best score first, ties broken by longer left then longer
// right piece, then by file order.
std::vector<Merge> merges_from_scores(const Source& s) {
  std::unordered_map<std::string, int64_t> vocab;  // raw tokens here, as transformers
  for (size_t i = 0; i < s.tokens.size(); ++i) vocab[s.tokens[i]] = static_cast<int64_t>(i);
  std::unordered_map<std::string, double> score;   // dict(zip(tokens, scores))
  std::vector<const std::string*> order;
  const size_t n = std::min(s.tokens.size(), s.scores.size());
  for (size_t i = 0; i < n; ++i)
    if (score.insert_or_assign(s.tokens[i], s.scores[i]).second) order.push_back(&s.tokens[i]);

  struct Candidate {
    Merge merge;
    double score;
    size_t left_chars, right_chars;
  };
  std::vector<Candidate> all;
  for (const std::string* tok : order) {
    const auto at = char_starts(*tok);
    std::vector<Candidate> local;
    for (size_t k = 1; k + 1 < at.size(); ++k) {
      std::string l = tok->substr(0, at[k]), r = tok->substr(at[k]);
      if (vocab.count(l) && vocab.count(r))
        local.push_back({{std::move(l), std::move(r)}, score[*tok], k, at.size() - 1 - k});
    }
    std::stable_sort(local.begin(), local.end(), [&](const Candidate& a, const Candidate& b) {
      const int64_t al = vocab[a.merge.first], bl = vocab[b.merge.first];
      return al != bl ? al < bl : vocab[a.merge.second] < vocab[b.merge.second];
    });
    for (auto& c : local) all.push_back(std::move(c));
  }
  std::stable_sort(all.begin(), all.end(), [](const Candidate& a, const Candidate& b) {
    if (a.score != b.score) return a.score > b.score;
    if (a.left_chars != b.left_chars) return a.left_chars > b.left_chars;
    return a.right_chars > b.right_chars;
  });
  std::vector<Merge> out;
  out.reserve(all.size());
  for (auto& c : all) out.push_back(std::move(c.merge));
  return out;
}

std::vector<Merge> file_merges(const Source& s, const Vocab& v) {
  std::vector<Merge> out;
  out.reserve(s.merges->size());
  for (size_t i = 0; i < s.merges->size(); ++i) {
    const std::string& m = (*s.merges)[i];
    const size_t sp = m.find(' ');
    const std::string ctx = "tokenizer.ggml.merges[" + std::to_string(i) + "] '" + m + "'";
    if (sp == std::string::npos || m.find(' ', sp + 1) != std::string::npos)
      fail(s.where, ctx + " is not two tokens separated by one space");
    Merge merge{m.substr(0, sp), m.substr(sp + 1)};
    // tokenizers refuses a merge whose parts or result are not in the vocabulary.
    if (!v.ids.count(merge.first) || !v.ids.count(merge.second) || !v.ids.count(merge.first + merge.second))
      fail(s.where, ctx + " joins tokens that are not in the vocabulary");
    out.push_back(std::move(merge));
  }
  return out;
}

// The added tokens as `tokenizers` keeps them: an existing token keeps its id (from
// earlier additions or the vocabulary); a new one gets the next id past the vocabulary.
class AddedTokens {
 public:
  explicit AddedTokens(const Vocab& v) : vocab_(v) {}

  void add(const std::string& content, bool special) {
    auto it = by_content_.find(content);
    if (it != by_content_.end() && by_id_[it->second].second == special) return;
    int64_t id;
    if (it != by_content_.end()) id = it->second;
    else if (auto v = vocab_.ids.find(content); v != vocab_.ids.end()) id = v->second;
    else id = next_id();
    by_content_[content] = id;
    by_id_[id] = {content, special};
  }

  bool contains(const std::string& content) const { return by_content_.count(content) > 0; }

  std::optional<int64_t> id_of(const std::string& content) const {
    if (auto it = by_content_.find(content); it != by_content_.end()) return it->second;
    if (auto it = vocab_.ids.find(content); it != vocab_.ids.end()) return it->second;
    return std::nullopt;
  }

  Json to_json() const {
    Json list = Json::array();
    for (const auto& [id, t] : by_id_)
      list.push_back({{"id", id}, {"content", t.first}, {"single_word", false}, {"lstrip", false},
                      {"rstrip", false}, {"normalized", false}, {"special", t.second}});
    return list;
  }

 private:
  int64_t next_id() const {
    const auto size = static_cast<int64_t>(vocab_.ids.size());
    if (by_id_.empty()) return size;
    const int64_t max = by_id_.rbegin()->first;
    return max >= size || size == 0 ? max + 1 : size;
  }

  const Vocab& vocab_;
  std::map<int64_t, std::pair<std::string, bool>> by_id_;  // id -> (content, special)
  std::unordered_map<std::string, int64_t> by_content_;
};

// The class defaults, control tokens (special), user-defined ones (not special), then
// the named ones, in the order transformers adds them (which decides any new ids).
AddedTokens make_added(const Source& s, const Vocab& v, bool byte_level) {
  AddedTokens added(v);
  // The tokens GPT2Tokenizer / LlamaTokenizer add as their own defaults.
  const std::vector<std::string> defaults =
      byte_level ? std::vector<std::string>{"<|endoftext|>"} : std::vector<std::string>{"<s>", "</s>", "<unk>"};
  for (const auto& d : defaults) added.add(d, true);
  const size_t n = std::min(s.tokens.size(), s.types.size());
  // A control token outside the byte alphabet is a llama.cpp mislabel transformers skips.
  for (size_t i = 0; i < n; ++i)
    if (s.types[i] == kControl && (!byte_level || in_byte_alphabet(s.tokens[i]))) added.add(s.tokens[i], true);
  for (size_t i = 0; i < n; ++i)
    if (s.types[i] == kUserDefined && (v.ids.count(s.tokens[i]) || added.contains(s.tokens[i])))
      added.add(s.tokens[i], false);
  // TokenizersBackend adds the named tokens it does not have yet, as special; one the
  // file already made an added token (a user-defined pad) keeps its flags.
  for (const auto* t : {&s.bos, &s.eos, &s.unk, &s.pad})
    if (*t && !added.contains(**t)) added.add(**t, true);
  return added;
}

Json bpe_model(const Vocab& v, const std::vector<Merge>& merges, bool byte_level) {
  Json vocab = Json::object();
  for (size_t i = 0; i < v.spelled.size(); ++i)
    if (v.ids.at(v.spelled[i]) == static_cast<int64_t>(i)) vocab[v.spelled[i]] = i;
  Json m = Json::array();
  for (const auto& [a, b] : merges) m.push_back(Json::array({a, b}));
  const Json affix = byte_level ? Json("") : Json(nullptr);
  return {{"type", "BPE"},       {"dropout", nullptr},          {"unk_token", nullptr},
          {"continuing_subword_prefix", affix},                 {"end_of_word_suffix", affix},
          {"fuse_unk", !byte_level}, {"byte_fallback", !byte_level}, {"ignore_merges", false},
          {"vocab", std::move(vocab)}, {"merges", std::move(m)}};
}

Json byte_level_part(bool add_prefix_space, bool use_regex) {
  return {{"type", "ByteLevel"}, {"add_prefix_space", add_prefix_space}, {"trim_offsets", true},
          {"use_regex", use_regex}};
}

Json pre_tokenizer(const Source& s, bool byte_level) {
  if (const char* regex = split_regex(s.pre))
    return {{"type", "Sequence"},
            {"pretokenizers", Json::array({{{"type", "Split"}, {"pattern", {{"Regex", regex}}},
                                            {"behavior", "Isolated"}, {"invert", false}},
                                           byte_level_part(false, false)})}};
  if (byte_level) return byte_level_part(false, true);
  return {{"type", "Metaspace"}, {"replacement", "\u2581"}, {"prepend_scheme", "first"}, {"split", false}};
}

Json decoder(bool byte_level) {
  if (byte_level) return byte_level_part(true, true);
  return {{"type", "Sequence"},
          {"decoders", Json::array({{{"type", "Replace"}, {"pattern", {{"String", "\u2581"}}}, {"content", " "}},
                                    {{"type", "ByteFallback"}},
                                    {{"type", "Fuse"}},
                                    {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}})}};
}

// TokenizersBackend.update_post_processor: "[bos] $A [eos]" and "[bos] $A [eos] [bos] $B [eos]".
Json post_processor(const std::optional<std::string>& bos, int64_t bos_id, bool add_bos,
                    const std::optional<std::string>& eos, int64_t eos_id, bool add_eos) {
  auto special = [](const std::string& t, int type_id) {
    return Json{{"SpecialToken", {{"id", t}, {"type_id", type_id}}}};
  };
  auto sequence = [](const char* id, int type_id) { return Json{{"Sequence", {{"id", id}, {"type_id", type_id}}}}; };
  Json single = Json::array(), pair;
  if (add_bos) single.push_back(special(*bos, 0));
  single.push_back(sequence("A", 0));
  if (add_eos) single.push_back(special(*eos, 0));
  pair = single;
  if (add_bos) pair.push_back(special(*bos, 1));
  pair.push_back(sequence("B", 1));
  if (add_eos) pair.push_back(special(*eos, 1));
  Json tokens = Json::object();
  if (add_bos) tokens[*bos] = {{"id", *bos}, {"ids", Json::array({bos_id})}, {"tokens", Json::array({*bos})}};
  if (add_eos) tokens[*eos] = {{"id", *eos}, {"ids", Json::array({eos_id})}, {"tokens", Json::array({*eos})}};
  return {{"type", "TemplateProcessing"}, {"single", single}, {"pair", pair}, {"special_tokens", tokens}};
}

Json optional_string(const std::optional<std::string>& s) { return s ? Json(*s) : Json(nullptr); }

}  // namespace

const char* gguf_pre_split_regex(const std::string& pre) { return split_regex(pre); }

HfTokenizerFiles hf_tokenizer_from_gguf(const GgufHeader& h) {
  const Source s = read_source(h);
  const bool byte_level = s.model == "gpt2";
  if (s.model != "gpt2" && s.model != "llama")
    fail(s.where, "tokenizer.ggml.model '" + s.model + "' is not supported (gpt2 and llama are)");
  for (const char* arch : {"gemma", "gemma2", "gemma3", "phi3"})
    if (!byte_level && s.arch == arch)
      fail(s.where, "transformers builds " + s.arch + " tokenizers its own way, which is not supported");

  const Vocab vocab = make_vocab(s, byte_level);
  std::vector<Merge> merges;
  if (s.merges) merges = file_merges(s, vocab);
  else if (!s.scores.empty()) merges = merges_from_scores(s);
  else fail(s.where, "tokenizer.ggml.merges and tokenizer.ggml.scores are both missing");
  const AddedTokens added = make_added(s, vocab, byte_level);

  // transformers' defaults: llama.cpp adds BOS to a SentencePiece vocabulary unless told.
  const bool add_bos = s.bos && s.add_bos.value_or(!byte_level);
  const bool add_eos = s.eos && s.add_eos.value_or(false);
  const int64_t bos_id = s.bos ? added.id_of(*s.bos).value_or(0) : 0;
  const int64_t eos_id = s.eos ? added.id_of(*s.eos).value_or(0) : 0;

  HfTokenizerFiles out;
  out.tokenizer = {{"version", "1.0"},
                   {"truncation", nullptr},
                   {"padding", nullptr},
                   {"added_tokens", added.to_json()},
                   {"normalizer", nullptr},
                   {"pre_tokenizer", pre_tokenizer(s, byte_level)},
                   {"post_processor", post_processor(s.bos, bos_id, add_bos, s.eos, eos_id, add_eos)},
                   {"decoder", decoder(byte_level)},
                   {"model", bpe_model(vocab, merges, byte_level)}};
  Json& cfg = out.tokenizer_config;
  cfg = Json::object();
  cfg["add_bos_token"] = add_bos;
  cfg["add_eos_token"] = add_eos;
  cfg["bos_token"] = optional_string(s.bos);
  cfg["eos_token"] = optional_string(s.eos);
  cfg["unk_token"] = optional_string(s.unk);
  cfg["pad_token"] = optional_string(s.pad);
  if (s.chat_template) cfg["chat_template"] = *s.chat_template;
  cfg["tokenizer_class"] = "TokenizersBackend";
  return out;
}

}  // namespace peft
