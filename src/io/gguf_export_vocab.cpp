// tokenizer.ggml.* for a byte-level BPE tokenizer.json, as convert_hf_to_gguf.py's
// LlamaModel.set_vocab writes it when it takes the gpt2 path: the token list and types
// of TextModel.get_vocab_base, the pre-tokenizer name, then gguf.SpecialVocab
// (gguf_export_special.cpp).
//
// One deliberate difference: the converter names the pre-tokenizer by hashing the ids
// its tokenizer gives a probe text and looking the hash up in a table of known models; we
// name it by the pre_tokenizer in tokenizer.json, which is what decides the split, for the
// four whose llama.cpp regexes are exactly transformers' (gpt-2, smollm, llama-bpe, qwen2).
#include <filesystem>
#include <map>

#include "io/gguf_export_internal.h"
#include "io/gguf_internal.h"
#include "util/format.h"

namespace fs = std::filesystem;

namespace peft::gguf_export {
namespace {

// llama.cpp's token types (gguf.TokenType).
constexpr int64_t kNormal = 1, kControl = 3, kUserDefined = 4, kUnused = 5;

bool is_byte_level(const Json& j, bool use_regex) {
  return j.is_object() && j.value("type", "") == "ByteLevel" && j.value("add_prefix_space", false) == false &&
         j.value("use_regex", true) == use_regex;
}

bool is_split(const Json& j, const char* regex) {
  if (!j.is_object() || j.value("type", "") != "Split" || !regex) return false;
  const auto p = j.find("pattern");
  return p != j.end() && p->is_object() && p->contains("Regex") && (*p)["Regex"] == regex &&
         j.value("behavior", "") == "Isolated" && j.value("invert", false) == false;
}

// The llama.cpp pre-tokenizer whose regexes split text as this pre_tokenizer does.
std::string recognize_pre(const Json& tok, const std::string& where) {
  const Json pt = tok.contains("pre_tokenizer") ? tok["pre_tokenizer"] : Json();
  if (is_byte_level(pt, true)) return "gpt-2";  // GPT-2's regex
  const Json seq = pt.is_object() && pt.value("type", "") == "Sequence" ? pt.value("pretokenizers", Json()) : Json();
  if (seq.is_array() && seq.size() == 2) {
    const Json& a = seq[0];
    if (a.is_object() && a.value("type", "") == "Digits" && a.value("individual_digits", false) &&
        is_byte_level(seq[1], true))
      return "smollm";  // \p{N}, then GPT-2's regex
    for (const char* pre : {"llama-bpe", "qwen2"})
      if (is_split(a, gguf_pre_split_regex(pre)) && is_byte_level(seq[1], false)) return pre;
  }
  fail(where, "pre_tokenizer is none that llama.cpp is known to split the same way (gpt-2, smollm, "
              "llama-bpe, qwen2); name one with --tokenizer-pre if you know it");
}

// TextModel.does_token_look_special.
bool looks_special(const std::string& t) {
  auto wrapped = [&](const std::string& open, const std::string& close) {
    return t.size() >= open.size() + close.size() && t.compare(0, open.size(), open) == 0 &&
           t.compare(t.size() - close.size(), close.size(), close) == 0;
  };
  return t == "<pad>" || t == "<mask>" || t == "<2mass>" || t == "[@BOS@]" || wrapped("<|", "|>") ||
         wrapped("<\xef\xbd\x9c", "\xef\xbd\x9c>") || wrapped("<unused", ">");
}

struct Added {
  std::string content;
  bool special = false;
};

// get_vocab_base: every id below vocab_size, "[PAD<i>]" (UNUSED) where the tokenizer has
// none; added tokens are CONTROL when special (or looking special), else USER_DEFINED.
void add_tokens(GgufMetadata& m, const Json& tok, int64_t vocab_size, const std::string& where) {
  std::map<int64_t, std::string> by_id;
  for (const auto& [t, id] : tok["model"]["vocab"].items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0) fail(where, "model.vocab['" + t + "'] is not a token id");
    by_id[id.get<int64_t>()] = t;
  }
  std::map<int64_t, Added> added;
  for (const auto& a : tok.value("added_tokens", Json::array())) {
    if (!a.is_object() || !a.contains("id") || !a["id"].is_number_integer() || !a.contains("content") ||
        !a["content"].is_string() || a["id"].get<int64_t>() < 0)
      fail(where, "added_tokens: an entry lacks an integer id or a string content");
    const int64_t id = a["id"].get<int64_t>();
    added[id] = {a["content"].get<std::string>(), a.value("special", false)};
    by_id[id] = added[id].content;  // get_vocab(): an added token overrides the model's
  }
  if (!by_id.empty() && by_id.rbegin()->first >= vocab_size)
    fail(where, "token id " + std::to_string(by_id.rbegin()->first) + " is past config.json's vocab_size " +
                    std::to_string(vocab_size));
  std::vector<std::string> tokens;
  std::vector<int64_t> types;
  for (int64_t i = 0; i < vocab_size; ++i) {
    auto t = by_id.find(i);
    if (t == by_id.end()) {
      tokens.push_back("[PAD" + std::to_string(i) + "]");
      types.push_back(kUnused);
      continue;
    }
    std::string text = t->second;
    auto a = added.find(i);
    if (a == added.end()) {
      types.push_back(kNormal);
    } else if (a->second.special || looks_special(text)) {
      types.push_back(kControl);
    } else {
      text = replace_all(text, "\xe2\x96\x81", " ");  // pre-normalize user-defined spaces
      types.push_back(kUserDefined);
    }
    if (!gguf_valid_utf8(text)) fail(where, "token " + std::to_string(i) + " is not valid UTF-8");
    tokens.push_back(std::move(text));
  }
  m.add("tokenizer.ggml.tokens", GgufValue::string_array(std::move(tokens)));
  m.add("tokenizer.ggml.token_type", GgufValue::int_array(GgufType::I32, types));
}

}  // namespace

void add_bpe_vocab(GgufMetadata& m, const std::string& dir, const LlamaHparams& hp, const std::string& pre) {
  const fs::path d(dir);
  const std::string tok_path = (d / "tokenizer.json").string();
  const fs::path tc_path = d / "tokenizer_config.json";
  Json tc = fs::exists(tc_path) ? read_json(tc_path.string()) : Json();
  // LlamaModel.set_vocab writes add_prefix_space before anything else of the tokenizer.
  if (tc.is_object() && tc.contains("add_prefix_space") && !tc["add_prefix_space"].is_null()) {
    if (!tc["add_prefix_space"].is_boolean()) fail(tc_path.string(), "add_prefix_space is not a boolean");
    m.add("tokenizer.ggml.add_space_prefix", GgufValue::boolean(tc["add_prefix_space"].get<bool>()));
  }
  if (fs::exists(d / "tokenizer.model"))
    fail((d / "tokenizer.model").string(), "SentencePiece vocabularies are not supported (only byte-level BPE "
                                           "tokenizer.json, which the converter's gpt2 path reads)");
  if (!fs::exists(tok_path)) fail(tok_path, "missing (the GGUF needs the model's tokenizer)");
  const Json tok = read_json(tok_path);
  const Json model = tok.value("model", Json::object());
  if (model.value("type", "") != "BPE" || !model.contains("vocab") || !model["vocab"].is_object())
    fail(tok_path, "model is not BPE with a vocab (only byte-level BPE tokenizers are supported)");
  if (model.value("byte_fallback", false))
    fail(tok_path, "SentencePiece-style BPE (byte_fallback) is not supported, only byte-level BPE");

  const std::string name = pre.empty() ? recognize_pre(tok, tok_path) : pre;
  m.add("tokenizer.ggml.model", GgufValue::string("gpt2"));
  m.add("tokenizer.ggml.pre", GgufValue::string(name));
  add_tokens(m, tok, hp.vocab_size, tok_path);
  add_special_vocab(m, dir, tok, tc, hp.config);
  // LlamaModel.set_vocab: "Apply to granite small models only" (SmolLM2's 49152 too).
  if (hp.vocab_size == 49152) m.set("tokenizer.ggml.add_bos_token", GgufValue::boolean(false));
}

}  // namespace peft::gguf_export
