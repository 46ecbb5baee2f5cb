// Task ids for the multitask tuners (multitask prompt tuning, Poly): row i of a batch
// belongs to task ids[i]. HF PEFT passes them as PeftModel.forward(task_ids=...); here
// whoever holds the batch installs them for the length of a forward and its backward
// (blocks recomputed under gradient checkpointing read them again), as MixedBatch::Scope
// does for per-row adapters, so neither the model code nor ModelInputs carry them.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

namespace peft {

class TaskIdsScope {
 public:
  explicit TaskIdsScope(at::Tensor ids);  // [batch] int64; undefined: none (the outer ones hide)
  ~TaskIdsScope();
  TaskIdsScope(const TaskIdsScope&) = delete;
  TaskIdsScope& operator=(const TaskIdsScope&) = delete;

 private:
  at::Tensor prev_;
  int64_t prev_lo_, prev_hi_;  // the outer scope's range
};

// The installed ids for a batch of `batch` rows, on `device`: one per row, each in
// [0, n_tasks). Throws a one-line error naming `method` where none are installed or they
// do not fit.
at::Tensor task_ids_for(const std::string& method, int64_t batch, int64_t n_tasks, at::Device device);

}  // namespace peft
