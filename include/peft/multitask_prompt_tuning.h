// Multitask prompt tuning (Wang et al. 2023, HF PEFT 0.21's MULTITASK_PROMPT_TUNING): one
// shared soft prompt P [n, dim], modulated per task by a rank-k product,
//   prompt(task) = P * (prefix_task_cols[task] @ prefix_task_rows[task])   (elementwise)
// with prefix_task_cols [tasks, n, k] and prefix_task_rows [tasks, k, dim]. Each example's
// task comes from its data line's "task_ids" (peft/task_ids.h). A target task starts from
// source tasks trained before: the source file's shared prompt and one task's factors
// (EXACT_SOURCE_TASK), the factors' average (AVERAGE_SOURCE_TASKS), or the shared prompt
// only (ONLY_SOURCE_SHARED).
#pragma once

#include <string>

#include "peft/prompt.h"

namespace peft {

struct MultitaskPromptTuningConfig : PromptTuningConfig {
  // prompt_tuning_init: RANDOM | TEXT | SAMPLE_VOCAB | AVERAGE_SOURCE_TASKS |
  // EXACT_SOURCE_TASK | ONLY_SOURCE_SHARED (the last three read the source file).
  std::string prompt_tuning_init_state_dict_path;  // the source tasks' adapter_model.safetensors
  int64_t prompt_tuning_init_task = 0;             // EXACT_SOURCE_TASK: which source task
  int64_t num_ranks = 1, num_tasks = 1;

  static MultitaskPromptTuningConfig from_json(const nlohmann::ordered_json& j, const std::string& where,
                                               std::vector<std::string>* unknown_keys = nullptr);
  std::string peft_type() const override { return "MULTITASK_PROMPT_TUNING"; }
  std::unique_ptr<AdapterConfig> clone() const override {
    return std::make_unique<MultitaskPromptTuningConfig>(*this);
  }
  nlohmann::ordered_json to_json() const override;
  std::shared_ptr<InputAdapter> make_input_adapter(Model& model, at::Generator& gen) const override;
};

}  // namespace peft
