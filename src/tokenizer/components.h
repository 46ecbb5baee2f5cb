// The stages of a tokenizer.json pipeline, each built from its JSON object.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <unordered_map>
#include <vector>

#include "peft/tokenizer.h"
#include "tokenizer/normalized.h"
#include "util/format.h"  // replace_all

namespace peft::tok {

using Json = nlohmann::json;

// Raised for malformed or unsupported tokenizer.json content; names the file and key.
[[noreturn]] void fail(const std::string& where, const std::string& what);

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual void normalize(NormalizedString& s) const = 0;
};
std::unique_ptr<Normalizer> make_normalizer(const Json& j, const std::string& where);
std::unique_ptr<Normalizer> make_precompiled(const Json& j, const std::string& where);  // SentencePiece's

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Splits each piece further; `first` tells whether a piece starts the input.
  virtual void split(std::vector<NormalizedString>& pieces) const = 0;
};
std::unique_ptr<PreTokenizer> make_pre_tokenizer(const Json& j, const std::string& where);

struct Token {
  int64_t id;
  std::string value;
  Range offsets;  // in the input
};

class Model {
 public:
  virtual ~Model() = default;
  // Tokens of one pre-tokenized piece; offsets mapped to the input through the piece.
  virtual void tokenize(const NormalizedString& piece, std::vector<Token>& out) const = 0;
  virtual std::optional<int64_t> token_to_id(const std::string& t) const = 0;
  virtual std::optional<std::string> id_to_token(int64_t id) const = 0;
  virtual size_t vocab_size() const = 0;
};
std::unique_ptr<Model> make_model(const Json& j, const std::string& where);

class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  // Number of special tokens process() adds (to leave room when truncating).
  virtual size_t added_tokens(bool pair) const = 0;
  // Adds special tokens / adjusts offsets; `b` may be null.
  virtual Encoding process(Encoding a, Encoding* b, bool add_special_tokens) const = 0;
};
std::unique_ptr<PostProcessor> make_post_processor(const Json& j, const std::string& where);

class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual std::vector<std::string> decode_chain(std::vector<std::string> tokens) const = 0;
};
std::unique_ptr<Decoder> make_decoder(const Json& j, const std::string& where);

// Byte-level mapping of GPT-2: every byte to a printable char, and back.
const std::vector<char32_t>& bytes_to_chars();
const std::unordered_map<char32_t, uint8_t>& chars_to_bytes();

// Concatenates encodings (used by post-processors).
void append_encoding(Encoding& dst, const Encoding& src);

}  // namespace peft::tok
