// MarianTokenizer (transformers 5, models/marian/tokenization_marian.py), rule for rule.
#include "tokenizer/marian.h"

#include <filesystem>
#include <map>
#include <unordered_map>
#include <unordered_set>

#include "tokenizer/sentencepiece.h"
#include "util/json_file.h"

namespace fs = std::filesystem;

namespace peft::tok {

namespace {

// A vocab.json as MarianTokenizer loads it (shared: the source and target models may use one): piece -> id, and id -> piece where a later
// entry of the file wins over an earlier one with the same id (Python's dict inversion).
struct MarianVocab {
  std::unordered_map<std::string, int64_t> ids;
  std::unordered_map<int64_t, std::string> pieces;

  static std::shared_ptr<const MarianVocab> read(const std::string& path) {
    const auto j = read_ordered_json_file(path);
    if (!j.is_object()) fail(path, "not a JSON object of piece: id");
    auto v = std::make_shared<MarianVocab>();
    for (const auto& [piece, id] : j.items()) {
      if (!id.is_number_integer()) fail(path, "the id of " + quote_json(Json(piece)) + " is not an integer");
      v->ids[piece] = id.get<int64_t>();
      v->pieces[id.get<int64_t>()] = piece;
    }
    return v;
  }

  // The id of `piece`; a missing one is an error naming `path`.
  int64_t id_of(const std::string& piece, const std::string& path, const std::string& what) const {
    const auto it = ids.find(piece);
    if (it == ids.end()) fail(path, what + " " + piece + " is not in the vocabulary");
    return it->second;
  }
};
using VocabPtr = std::shared_ptr<const MarianVocab>;

class MarianModel : public Model {
 public:
  MarianModel(std::shared_ptr<const SentencePiece> encode_spm, std::shared_ptr<const SentencePiece> decode_spm,
              VocabPtr encoder, VocabPtr decoder, int64_t unk_id)
      : spm_(std::move(encode_spm)), decode_spm_(std::move(decode_spm)), encoder_(std::move(encoder)),
        decoder_(std::move(decoder)), unk_id_(unk_id) {}

  // One segment between added tokens: a leading language code (">>" up to the first "<<")
  // as one token, the rest through SentencePiece, each piece looked up by its text.
  void tokenize(const NormalizedString& segment, std::vector<Token>& out) const override {
    const std::string& text = segment.str();
    size_t from = 0;
    if (text.compare(0, 2, ">>") == 0) {
      if (const size_t end = text.find("<<"); end != std::string::npos) {
        from = end + 2;
        out.push_back({id_of(text.substr(0, from)), text.substr(0, from), segment.original(0, from)});
      }
    }
    for (auto& p : spm_->encode(text.substr(from)))
      out.push_back({id_of(p.text), std::move(p.text), segment.original(from + p.begin, from + p.end)});
  }

  std::optional<int64_t> token_to_id(const std::string& t) const override {
    auto it = encoder_->ids.find(t);
    return it == encoder_->ids.end() ? std::nullopt : std::optional<int64_t>(it->second);
  }
  // The vocabulary's piece, else the decoding SentencePiece model's piece of that index
  // (as _convert_id_to_token falls back).
  std::optional<std::string> id_to_token(int64_t id) const override {
    if (auto it = decoder_->pieces.find(id); it != decoder_->pieces.end()) return it->second;
    return decode_spm_->id_to_piece(id);
  }
  size_t vocab_size() const override { return encoder_->ids.size(); }

 private:
  int64_t id_of(const std::string& piece) const {
    auto it = encoder_->ids.find(piece);
    return it == encoder_->ids.end() ? unk_id_ : it->second;
  }

  std::shared_ptr<const SentencePiece> spm_, decode_spm_;
  VocabPtr encoder_, decoder_;
  int64_t unk_id_;
};

// convert_tokens_to_string: runs of ordinary pieces through SentencePiece's DecodePieces,
// each special token written as it is followed by a space, "▁" as a space, the whole
// stripped of Unicode whitespace at both ends; then clean_up_tokenization where the
// tokenizer_config asks for it.
class MarianDecoder : public Decoder {
 public:
  MarianDecoder(std::shared_ptr<const SentencePiece> spm, std::unordered_set<std::string> specials, bool clean_up)
      : spm_(std::move(spm)), specials_(std::move(specials)), clean_up_(clean_up) {}

  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    std::string out;
    std::vector<std::string> run;
    for (auto& t : tokens) {
      if (specials_.count(t)) {
        out += spm_->decode(run) + t + " ";
        run.clear();
      } else {
        run.push_back(std::move(t));
      }
    }
    out += spm_->decode(run);
    out = replace_all(out, "\xE2\x96\x81", " ");
    out = strip_unicode_space(out);
    if (clean_up_)
      for (const auto& [from, to] : kCleanUp) out = replace_all(out, from, to);
    return {out};
  }

 private:
  // transformers' clean_up_tokenization, in its order.
  static constexpr std::pair<const char*, const char*> kCleanUp[] = {
      {" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","}, {" ' ", "'"}, {" n't", "n't"},
      {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};

  // Python's str.strip(): the chars str.isspace() calls whitespace.
  static bool py_space(char32_t c) {
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
  }
  static std::string strip_unicode_space(const std::string& s) {
    const auto cps = decode_utf8(s);
    size_t b = 0, e = cps.size();
    while (b < e && py_space(cps[b])) ++b;
    while (e > b && py_space(cps[e - 1])) --e;
    std::string out;
    for (size_t i = b; i < e; ++i) append_utf8(out, cps[i]);
    return out;
  }

  std::shared_ptr<const SentencePiece> spm_;
  std::unordered_set<std::string> specials_;
  bool clean_up_;
};

// A special token's text from tokenizer_config.json (a string or an AddedToken object).
std::string token_text(const Json& cfg, const char* role, const char* fallback, const std::string& where) {
  if (!cfg.contains(role) || cfg[role].is_null()) return fallback;
  const auto& v = cfg[role];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  fail(where, std::string("'") + role + "' is neither a string nor an added token");
}

// A true/false setting of tokenizer_config.json; an error names the file and key.
bool flag(const Json& cfg, const char* key, const std::string& where) {
  if (!cfg.contains(key) || cfg[key].is_null()) return false;
  return strict_get<bool>(cfg[key], where + ": '" + key + "'");
}

// The special tokens (eos, unk, pad, then any additional ones), each once, with its id in
// the source vocab.json (MarianTokenizer.get_vocab); eos first.
std::vector<std::pair<std::string, int64_t>> special_tokens(const Json& cfg, const MarianVocab& vocab,
                                                            const std::string& where, const std::string& vocab_path) {
  std::vector<std::string> texts = {token_text(cfg, "eos_token", "</s>", where),
                                    token_text(cfg, "unk_token", "<unk>", where),
                                    token_text(cfg, "pad_token", "<pad>", where)};
  for (const char* key : {"additional_special_tokens", "extra_special_tokens"})
    if (cfg.contains(key) && cfg[key].is_array())
      for (const auto& t : cfg[key])
        if (t.is_string()) texts.push_back(t.get<std::string>());
  std::vector<std::pair<std::string, int64_t>> specials;
  std::unordered_set<std::string> seen;
  for (const auto& t : texts)
    if (const int64_t id = vocab.id_of(t, vocab_path, "tokenizer_config.json's special token"); seen.insert(t).second)
      specials.emplace_back(t, id);
  return specials;
}

// "$A </s>" and "$A $B </s>", as build_inputs_with_special_tokens.
Json eos_post_processor(const std::string& eos, int64_t eos_id) {
  return {{"type", "TemplateProcessing"},
          {"single", Json::array({{{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                                  {{"SpecialToken", {{"id", eos}, {"type_id", 0}}}}})},
          {"pair", Json::array({{{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                                {{"Sequence", {{"id", "B"}, {"type_id", 0}}}},
                                {{"SpecialToken", {{"id", eos}, {"type_id", 0}}}}})},
          {"special_tokens", {{eos, {{"id", eos}, {"ids", {eos_id}}, {"tokens", {eos}}}}}}};
}

}  // namespace

bool is_marian_folder(const std::string& dir) {
  const fs::path d = dir;
  return fs::is_directory(d) && !fs::exists(d / "tokenizer.json") && fs::exists(d / "source.spm") &&
         fs::exists(d / "vocab.json");
}

MarianParts load_marian(const std::string& dir_in) {
  const fs::path dir = dir_in;
  const std::string where = (dir / "tokenizer_config.json").string();
  MarianParts parts;
  parts.config = fs::exists(where) ? read_json_file(where) : Json::object();
  if (!parts.config.is_object()) fail(where, "not a JSON object");
  const Json& cfg = parts.config;
  const bool separate = flag(cfg, "separate_vocabs", where);
  const std::string source_path = (dir / "vocab.json").string(), target_path = (dir / "target_vocab.json").string();
  const VocabPtr source_vocab = MarianVocab::read(source_path);
  const std::string unk = token_text(cfg, "unk_token", "<unk>", where);
  const int64_t unk_id = source_vocab->id_of(unk, source_path, "the unknown token");
  parts.specials = special_tokens(cfg, *source_vocab, where, source_path);
  std::unordered_set<std::string> special_set;
  for (const auto& [text, _] : parts.specials) special_set.insert(text);

  // Decoding uses the source side for a shared vocabulary, the target side otherwise
  // (MarianTokenizer._decode's use_source_tokenizer default); both models load either way.
  const auto spm_at = [&](const char* name) {
    return std::make_shared<const SentencePiece>(SentencePiece::from_file((dir / name).string()));
  };
  const auto source_spm = spm_at("source.spm"), target_spm = spm_at("target.spm");
  const VocabPtr target_vocab = separate ? MarianVocab::read(target_path) : source_vocab;
  const int64_t target_unk_id = target_vocab->id_of(unk, target_path, "the unknown token");
  const auto decode_spm = separate ? target_spm : source_spm;
  parts.decoder =
      std::make_unique<MarianDecoder>(decode_spm, special_set, flag(cfg, "clean_up_tokenization_spaces", where));
  parts.target_model = std::make_unique<MarianModel>(target_spm, decode_spm, target_vocab, target_vocab, target_unk_id);
  parts.model = std::make_unique<MarianModel>(source_spm, decode_spm, source_vocab, target_vocab, unk_id);
  parts.post_processor = eos_post_processor(parts.specials[0].first, parts.specials[0].second);
  return parts;
}

}  // namespace peft::tok
