#include "tuners/multitask_prompt_tuning/prompt.h"

#include <ATen/ATen.h>

#include "peft/task_ids.h"

namespace peft {

MultitaskSoftPrompt::MultitaskSoftPrompt(int64_t n_, int64_t dim_, int64_t rows_, int64_t tasks_, int64_t ranks)
    : SoftPrompt(n_, dim_, "prompt_embeddings", rows_), tasks(tasks_) {
  task_cols = at::zeros({tasks, rows, ranks}, at::kFloat);
  task_rows = at::zeros({tasks, ranks, dim}, at::kFloat);
  register_parameter("prefix_task_cols", &task_cols, {tasks, rows, ranks});
  register_parameter("prefix_task_rows", &task_rows, {tasks, ranks, dim});
}

// HF's MultitaskPromptEmbedding.forward: every row's prompts times its task's
// cols @ rows; the first n rows go before the (encoder's) input.
at::Tensor MultitaskSoftPrompt::batch_prompts(int64_t b) {
  const auto ids = task_ids_for("MULTITASK_PROMPT_TUNING", b, tasks, embedding.device());
  const auto task_prompts = at::matmul(task_cols.index_select(0, ids), task_rows.index_select(0, ids));
  return (embedding.unsqueeze(0) * task_prompts).narrow(1, 0, n);
}

std::vector<std::pair<std::string, at::Tensor>> MultitaskSoftPrompt::saved_tensors() {
  return {{"prefix_task_cols", task_cols.detach()},
          {"prefix_task_rows", task_rows.detach()},
          {"prompt_embeddings", embedding.detach()}};
}

}  // namespace peft
