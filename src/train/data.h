// Training data: JSONL lines into token ids and labels, and batches of them.
#pragma once

#include <ATen/core/Tensor.h>

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "peft/tokenizer.h"

namespace peft {

struct Example {
  std::vector<int64_t> input_ids;
  std::vector<int64_t> labels;  // causal LM: per token, -100 = no loss
  std::vector<int64_t> position_ids;  // packed rows: restart at 0 per example; empty = 0, 1, ...
  int64_t class_label = -1;     // classification
  std::vector<float> targets;   // regression / multi-label classification: num_labels floats
  at::Tensor pixel_values;      // image classification: [channels, height, width]
  at::Tensor input_features;    // speech recognition (Whisper): log-mel [mel_bins, frames]
  bool seq2seq = false;         // encoder-decoder: labels are the target's ids, not aligned with input_ids
  int64_t task_id = -1;         // multitask tuners (MPT, Poly): the line's "task_ids"; -1 = none
  std::vector<int64_t> input_type_mask;  // CPT: the line's "input_type_mask", one per token; empty = none
};

struct DataOptions {
  std::string format = "auto";
  int64_t max_length = 512;
  bool packing = false;  // causal LM: whole examples into rows of max_length, kept apart
  bool completion_only_loss = true;
  bool last_turn_only = false;           // messages: loss on the last assistant turn only
  bool skip_bad_lines = false;
  bool classification = false;
  const Tokenizer* tokenizer = nullptr;  // required unless every line is input_ids
  nlohmann::json label2id;               // from the model's config.json, for string labels
  int64_t num_labels = 0;                // classification: labels must lie in [0, num_labels)
  // Classification: config.json's problem_type, "" when it sets none (problem_type_of then
  // infers it per line, as transformers does from the labels).
  std::string problem_type;
  int64_t vocab_size = 0;                // input_ids must lie in [0, vocab_size) (0: unchecked)
  // Token classification ({"tokens", "tags"} lines, train/token_data.h): labels per
  // sub-token; label_all_tokens labels every sub-token of a word, not just its first.
  bool token_classification = false;
  bool label_all_tokens = false;
  std::string model_dir;                 // image files: preprocessed by its preprocessor_config.json
  bool seq2seq = false;                  // encoder-decoder models (T5): {"input", "target"} lines
  bool contrastive = false;              // CLIP: {"image", "text"} pairs (train/image_data.h)
  // Speech recognition (Whisper): {"audio", "text"} lines (train/audio_data.h); the text's
  // ids lose a leading decoder_start and may not exceed the decoder's max_target_positions.
  bool audio = false;
  int64_t decoder_start_token_id = -1;
  int64_t max_target_positions = 0;
};

// transformers' problem_type of a *ForSequenceClassification: config.json's "problem_type"
// when set, else "regression" for one label, "single_label_classification" for integer
// labels and "multi_label_classification" for float ones. The loss follows it: MSE,
// cross-entropy, binary cross-entropy with logits. A problem_type transformers does not
// know is an error naming it.
std::string problem_type_of(const nlohmann::json& config, int64_t num_labels, bool float_labels);

// Reads a JSONL file. Formats: {"input_ids": [...]}, {"text"}, {"prompt", "completion"},
// {"messages": [{"role", "content", ...}]} or ShareGPT {"conversations": [{"from",
// "value"}]} (rendered with the tokenizer's chat template; loss on every assistant turn,
// or the last), {"text", "label"} (label: a class index or name; for regression a number or
// a list of num_labels numbers; for multi-label a list of num_labels 0/1 values). A
// malformed line is an error naming the file and line,
// or skipped with a warning under skip_bad_lines.
std::vector<Example> load_examples(const std::string& path, const DataOptions& opts);
// The same for JSONL text in memory; `path` names it in errors.
std::vector<Example> parse_examples(const std::string& jsonl, const std::string& path, const DataOptions& opts);

// Image classification: images from a .npy [N, C, H, W] (float, or uint8 scaled to
// [0, 1]) and class indices in [0, num_labels) from a .npy [N].
std::vector<Example> load_image_examples(const std::string& images_npy, const std::string& labels_npy,
                                         int64_t num_labels);

// Causal LM packing (TRL's best-fit decreasing): whole examples into as few rows of at
// most max_length tokens as fit, longest first. Position ids restart at 0 for each
// example, so attention stays within it, and its first label is -100, so it is not
// predicted from the example before it (HF's DataCollatorWithFlattening does the same).
std::vector<Example> pack_examples(const std::vector<Example>& examples, int64_t max_length);

struct Batch {
  at::Tensor input_ids, attention_mask, labels;  // labels: [b, s] (LM) or [b] (classes)
  // Regression / multi-label classification: float targets [b, num_labels], instead of labels.
  at::Tensor targets;
  at::Tensor position_ids;  // packed or flattened rows; then the model gets no attention_mask
  at::Tensor pixel_values;                       // images instead of ids (CLIP: with ids, labels = 0..b-1)
  at::Tensor input_features;                     // audio instead of ids (Whisper): [b, mel_bins, frames]
  at::Tensor task_ids;    // [b] int64: each row's task (multitask tuners); undefined: none
  at::Tensor input_type_mask;  // [b, s] int64 (CPT's token types), 0 on padding; undefined: none
  int64_t num_items = 0;  // tokens that carry loss after the causal shift, or examples
};

// Right-pads with pad_id; LM labels get -100 on padding. `flatten` (causal LM): the
// examples become one row [1, total] without padding, as HF's DataCollatorWithFlattening
// makes it (padding-free training).
// The examples' task ids [b] (undefined where they have none).
at::Tensor task_ids_of(const std::vector<const Example*>& examples);

Batch collate(const std::vector<const Example*>& examples, int64_t pad_id, bool causal, bool flatten = false);

}  // namespace peft
