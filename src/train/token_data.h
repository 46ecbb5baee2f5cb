// Token classification data (NER-style): {"tokens": [...], "tags": [...]} lines into
// sub-token ids with one label per sub-token, aligned as transformers' token-classification
// example (run_ner.py) aligns them.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "train/data.h"

namespace peft {

// True for a line with "tokens" and "tags" (or HF datasets' "ner_tags").
bool is_token_tags_line(const nlohmann::json& j);

// One line: the words are tokenized as split words (Tokenizer::encode_words, special
// tokens added); the first sub-token of each word gets the word's tag, the other
// sub-tokens -100 (with o.label_all_tokens: the tag too, B-X turned into I-X where the
// labels have it), special tokens -100. Tags are label names from config.json's
// label2id or label indices; an unknown one is an error naming the word.
Example token_tags_example(const nlohmann::json& j, const DataOptions& o);

// The label names in id order, from config.json's id2label (or label2id); "LABEL_i"
// where neither names label i.
std::vector<std::string> label_names(const nlohmann::json& config, int64_t num_labels);

}  // namespace peft
