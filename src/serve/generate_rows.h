// The per-row bookkeeping that causal and encoder-decoder generation share: the prompt
// checks, and recording each step's tokens until every row has produced an EOS token.
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "peft/generate.h"

namespace peft {

// The prompts as one batch: ids [rows, longest] filled with `pad`, mask [rows, longest]
// (1 = real), and each row's padding count at the start (all 0 on the right).
struct PaddedPrompts {
  at::Tensor ids, mask, left_pad;
};
PaddedPrompts pad_prompts(const std::vector<std::vector<int64_t>>& prompts, int64_t pad, bool left);

class GeneratedRows {
 public:
  // Throws on an empty prompt. Each row starts as its prompt.
  GeneratedRows(const std::vector<std::vector<int64_t>>& prompts, const GenerationConfig& cfg);

  int64_t rows() const { return static_cast<int64_t>(out_.size()); }

  // Appends next[i] (a CPU int64 [rows] tensor) to each unfinished row, and overwrites
  // finished rows' entries with the pad id so the next step feeds them a pad token.
  // Returns true when every row has finished.
  bool append(at::Tensor& next);

  std::vector<std::vector<int64_t>> take() { return std::move(out_); }
  // Beam search's answers, each prompt's consecutive (num_return_sequences per prompt): each
  // tail after its prompt.
  std::vector<std::vector<int64_t>> extend_all(const std::vector<std::vector<int64_t>>& tails);

 private:
  const GenerationConfig& cfg_;
  std::vector<std::vector<int64_t>> out_;
  std::vector<bool> done_;
};

// Greedy or sampled decoding, one step at a time: each step's logits go through the logits
// processors (over the rows' whole sequences), the next tokens are chosen and recorded.
class GreedyLoop {
 public:
  // `sequences` [rows, prompt_len] (CPU int64): the rows as the model read them (padded);
  // `left_pad` [rows] (CPU int64; undefined: none): each row's padding columns at the start.
  GreedyLoop(GeneratedRows& rows, const at::Tensor& sequences, const GenerationConfig& cfg,
             const at::Tensor& left_pad = {});
  // Chooses and records the tokens after `logits` [rows, vocab]; returns them (CPU [rows])
  // for the next forward, or nothing once every row has finished or max_new_tokens are made.
  std::optional<at::Tensor> step(const at::Tensor& logits);

 private:
  GeneratedRows& rows_;
  const GenerationConfig& cfg_;
  at::Tensor sequences_, left_pad_;
  int64_t prompt_len_, made_ = 0;
  at::Generator gen_;
};

}  // namespace peft
