// The per-row bookkeeping that causal and encoder-decoder generation share: the prompt
// checks, and recording each step's tokens until every row has produced an EOS token.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <utility>
#include <vector>

#include "peft/generate.h"

namespace peft {

class GeneratedRows {
 public:
  // Throws on an empty prompt. Each row starts as its prompt.
  GeneratedRows(const std::vector<std::vector<int64_t>>& prompts, const GenerationConfig& cfg);

  int64_t rows() const { return static_cast<int64_t>(out_.size()); }
  int64_t longest_prompt() const { return longest_prompt_; }

  // Appends next[i] (a CPU int64 [rows] tensor) to each unfinished row, and overwrites
  // finished rows' entries with the pad id so the next step feeds them a pad token.
  // Returns true when every row has finished.
  bool append(at::Tensor& next);

  std::vector<std::vector<int64_t>> take() { return std::move(out_); }

 private:
  const GenerationConfig& cfg_;
  std::vector<std::vector<int64_t>> out_;
  std::vector<bool> done_;
  int64_t longest_prompt_ = 0;
};

}  // namespace peft
