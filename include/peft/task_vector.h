// Task vectors as LoRA adapters: the difference between a fine-tuned checkpoint and its
// base, per Linear layer, truncated to rank r by an SVD and written as an HF PEFT LoRA
// adapter (`peft extract`, docs/COMBINE.md). Such adapters then scale, negate and add
// with `peft combine` (task arithmetic).
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "peft/model.h"
#include "peft/peft_model.h"

namespace peft {

struct TaskVectorOptions {
  int64_t rank = 0;  // r of the adapter (>= 1)
  // Target module names as LoRA's target_modules list matches them (exact name or
  // ".name" suffix); none: "all-linear" (every Linear / Conv1D except the output head).
  std::optional<std::vector<std::string>> targets;
};

// What one target matrix's delta kept.
struct MatrixEnergy {
  std::string path;           // module path, e.g. model.layers.0.self_attn.q_proj
  int64_t out = 0, in = 0;    // delta's shape as [out, in]
  int64_t kept = 0;           // singular values kept (min(rank, out, in)); 0 when skipped
  double kept_sq = 0;         // sum of the kept singular values squared
  double total_sq = 0;        // sum of all of them squared (= |delta|_F^2)
  bool skipped() const { return total_sq == 0; }  // delta exactly zero
  double energy() const { return total_sq == 0 ? 1.0 : kept_sq / total_sq; }
};

// A parameter outside the targets that differs between the checkpoints, which a LoRA on
// the targets cannot carry (embeddings, norms, biases, the output head).
struct NotCaptured {
  std::string name;
  double max_abs_diff = 0;
};

struct TaskVectorReport {
  std::vector<MatrixEnergy> matrices;  // in module order
  std::vector<NotCaptured> not_captured;
  double total_energy() const;  // sum of kept_sq / sum of total_sq over all matrices
  int64_t skipped() const;
};

// Adds LoRA adapter `adapter_name` to `peft` (whose model is the base) holding, for each
// target layer, delta = W_finetuned - W_base (in float64) truncated to `rank` singular
// values: B = U_r S_r, A = Vh_r (float32; r = lora_alpha = rank, scaling 1). A layer
// whose delta is smaller than the rank gets zero rows/columns beyond min(out, in).
// Targets whose delta is exactly zero are left out of the adapter (exclude_modules names
// them where target_modules would still match). `on_matrix` (may be empty) sees each
// matrix as it is done, with its 1-based index and the number of targets. Checkpoints of other architectures or parameter names or shapes
// are refused with std::invalid_argument naming the key.
TaskVectorReport extract_task_vector(PeftModel& peft, Model& finetuned, const TaskVectorOptions& options,
                                     const std::string& adapter_name = "default",
                                     const std::function<void(const MatrixEnergy&, size_t, size_t)>& on_matrix = {});

}  // namespace peft
