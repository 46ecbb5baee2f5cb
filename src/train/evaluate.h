// The loss of a batch, and evaluation over a data set (loss, perplexity, accuracy).
#pragma once

#include <ATen/core/Tensor.h>

#include <nlohmann/json.hpp>
#include <vector>

#include "peft/peft_model.h"
#include "train/data.h"

namespace peft {

// The forward of one batch: its summed cross-entropy against the batch's labels (shifted
// by one for causal LMs; -100 ignored; with float targets the problem_type's MSE or binary
// cross-entropy, per example the mean over labels), to be divided by Batch::num_items, and for
// classifiers the fp32 logits. Causal LMs never materialize their logits: the loss is
// computed from the last hidden states in chunks (train/lm_loss.h).
struct BatchLoss {
  at::Tensor sum;
  at::Tensor logits;  // classifiers only
};
BatchLoss batch_loss(PeftModel& peft, const Batch& b, at::Device dev, bool causal, bool checkpoint_layers = false);

// {eval_loss, eval_perplexity} for causal LMs, {eval_loss, eval_accuracy} for classifiers
// (multi-label: every label right; regression: eval_mse instead of eval_accuracy),
// and for token classifiers eval_accuracy (labelled tokens), eval_precision / eval_recall /
// eval_f1 (entities, seqeval's default mode) and eval_token_f1 (train/token_metrics.h):
// one forward per batch, no gradients, dropout off; with bf16, under bf16 autocast.
nlohmann::json run_eval(PeftModel& peft, const std::vector<Example>& data, int64_t batch, int64_t pad, bool causal,
                        at::Device dev, bool bf16 = false);

}  // namespace peft
