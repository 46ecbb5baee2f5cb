// Hugging Face tokenizer.json in C++: the same ids, tokens and offsets as `tokenizers`.
//
// Supported components (anything else is refused with the file and key named):
//   normalizers     NFC, NFD, NFKC, NFKD, Lowercase, StripAccents, BertNormalizer, Prepend,
//                   Replace, Strip, Precompiled (SentencePiece's charsmap), Sequence
//   pre-tokenizers  ByteLevel, Split, Metaspace, Whitespace, WhitespaceSplit,
//                   BertPreTokenizer, Punctuation, Digits, Sequence
//   models          BPE (merges, byte fallback, ignore_merges), WordPiece, Unigram (Viterbi)
//   post-processors TemplateProcessing, BertProcessing, RobertaProcessing, ByteLevel, Sequence
//   decoders        ByteLevel, Metaspace, WordPiece, ByteFallback, Fuse, Strip, Replace,
//                   BPEDecoder, Sequence
// Offsets are byte offsets into the UTF-8 input (Python's `tokenizers` reports them in
// characters; the same positions).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <utility>
#include <vector>

namespace peft {

struct Encoding {
  std::vector<int64_t> ids;
  std::vector<std::string> tokens;
  std::vector<std::pair<size_t, size_t>> offsets;  // byte ranges of the input
  std::vector<int64_t> type_ids;
  std::vector<int8_t> special_tokens_mask;
  std::vector<int8_t> attention_mask;
};

struct PaddingOptions {
  int64_t pad_id = 0;
  std::string pad_token = "[PAD]";
  int64_t pad_type_id = 0;
  std::optional<size_t> length;  // fixed length; default: the longest in the batch
  size_t pad_to_multiple_of = 0;
  bool left = false;
};

class Tokenizer {
 public:
  // tokenizer.json (or a folder holding it, with tokenizer_config.json beside it), a GGUF
  // model (or a folder holding only one) whose metadata carries the tokenizer, or a folder
  // of transformers' MarianTokenizer (source.spm, target.spm, vocab.json; no tokenizer.json),
  // read as that tokenizer and the sentencepiece library encode and decode.
  static Tokenizer from_file(const std::string& path);
  static Tokenizer from_gguf(const std::string& path);
  static Tokenizer from_json(const std::string& json, const std::string& where = "tokenizer.json");
  ~Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;

  Encoding encode(const std::string& text, bool add_special_tokens = true) const;
  Encoding encode_pair(const std::string& a, const std::string& b, bool add_special_tokens = true) const;
  // Text for the decoder of an encoder-decoder model (transformers' text_target=): what
  // encode() gives, except for MarianTokenizer folders, whose targets go through
  // target.spm (and target_vocab.json with separate_vocabs).
  Encoding encode_target(const std::string& text, bool add_special_tokens = true) const;
  std::vector<Encoding> encode_batch(const std::vector<std::string>& texts, bool add_special_tokens = true) const;
  // Words already split (transformers' is_split_into_words, `tokenizers`' is_pretokenized):
  // each word is normalized, pre-tokenized and tokenized on its own (its offsets are byte
  // ranges within the word), then all are truncated and post-processed as one sequence.
  // `word_ids`, when given, receives each token's word index, -1 for the special tokens
  // the post-processor adds (word_ids()'s None).
  Encoding encode_words(const std::vector<std::string>& words, bool add_special_tokens = true,
                        std::vector<int64_t>* word_ids = nullptr) const;
  std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens = false) const;

  // Truncation to max_length tokens (special tokens included), cutting from the right.
  // tokenizer.json's "truncation" and "padding" enable them when it loads. encode() and
  // encode_pair() truncate but do not pad (`tokenizers`' encode pads a single encoding
  // too, e.g. to a Fixed length); encode_batch() does both.
  void enable_truncation(size_t max_length);
  void enable_padding(PaddingOptions opts);
  void no_truncation();
  void no_padding();
  std::optional<size_t> truncation() const;
  const std::optional<PaddingOptions>& padding() const;

  std::optional<int64_t> token_to_id(const std::string& token) const;
  std::optional<std::string> id_to_token(int64_t id) const;
  size_t vocab_size() const;  // the model's vocabulary plus added tokens
  // Special tokens named by tokenizer_config.json (bos_token, eos_token, pad_token, unk_token).
  std::optional<std::string> special_token(const std::string& role) const;
  // The Jinja chat template of tokenizer_config.json (or chat_template.jinja), if any.
  std::optional<std::string> chat_template() const;
  // `messages` ([{role, content, ...}], passed to the template as they are) rendered with
  // the chat template as transformers' apply_chat_template renders it, special tokens
  // from tokenizer_config.json; ChatML when the tokenizer has no template.
  std::string apply_chat_template(const nlohmann::ordered_json& messages, bool add_generation_prompt) const;

  struct Impl;

 private:
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  static Tokenizer build(const nlohmann::json& j, const std::string& where);
  void apply_config(const nlohmann::json& tokenizer_config);  // special-token roles, chat template
  std::unique_ptr<Impl> impl_;
};

}  // namespace peft
