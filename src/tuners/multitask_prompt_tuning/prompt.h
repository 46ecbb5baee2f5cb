// The multitask prompt: SoftPrompt's shared rows times each row's task factors.
#pragma once

#include "tuners/prompt_learning/prompt_learning.h"

namespace peft {

class MultitaskSoftPrompt : public SoftPrompt {
 public:
  MultitaskSoftPrompt(int64_t n, int64_t dim, int64_t rows, int64_t tasks, int64_t ranks);
  std::string type_name() const override { return "MultitaskSoftPrompt"; }
  at::Tensor batch_prompts(int64_t b) override;  // [b, n, dim], row i by its task
  at::Tensor row_prompts() override { return {}; }  // rows differ by task
  std::vector<std::pair<std::string, at::Tensor>> saved_tensors() override;

  at::Tensor task_cols, task_rows;  // prefix_task_cols [tasks, rows, ranks], prefix_task_rows [tasks, ranks, dim]
  int64_t tasks;
};

}  // namespace peft
