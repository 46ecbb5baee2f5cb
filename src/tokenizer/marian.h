// transformers' MarianTokenizer (opus-mt and other Marian models): two SentencePiece models
// (source.spm, target.spm) whose pieces are looked up by string in vocab.json (and
// target_vocab.json with separate_vocabs), language codes such as ">>fra<<" kept whole at
// the start of a text, </s> appended. Built from such a folder by Tokenizer::from_file.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "tokenizer/components.h"

namespace peft::tok {

// True where `dir` is a MarianTokenizer folder: source.spm and vocab.json, no tokenizer.json.
bool is_marian_folder(const std::string& dir);

struct MarianParts {
  std::unique_ptr<Model> model;         // encodes with source.spm and vocab.json
  std::unique_ptr<Model> target_model;  // text_target: target.spm, target_vocab.json if separate
  std::unique_ptr<Decoder> decoder;  // MarianTokenizer.decode's convert_tokens_to_string
  // The special tokens (eos, unk, pad and any additional ones): content and id in vocab.json.
  std::vector<std::pair<std::string, int64_t>> specials;
  Json post_processor;  // TemplateProcessing: "$A </s>", "$A $B </s>"
  Json config;          // tokenizer_config.json ({} without one)
};

// Throws std::runtime_error naming the file and key on a missing or malformed file.
MarianParts load_marian(const std::string& dir);

}  // namespace peft::tok
