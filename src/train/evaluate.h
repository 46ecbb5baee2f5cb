// The loss of a batch, and evaluation over a data set (loss, perplexity, accuracy).
#pragma once

#include <ATen/core/Tensor.h>

#include <nlohmann/json.hpp>
#include <vector>

#include "peft/peft_model.h"
#include "train/data.h"

namespace peft {

// Logits of a batch in fp32.
at::Tensor batch_logits(PeftModel& peft, const Batch& b, at::Device dev, bool checkpoint_layers = false);

// Summed cross-entropy of `logits` against the batch's labels (shifted by one for causal
// LMs; -100 ignored), to be divided by Batch::num_items.
at::Tensor loss_sum(const at::Tensor& logits, const Batch& b, bool causal);

// {eval_loss, eval_perplexity} for causal LMs, {eval_loss, eval_accuracy} for classifiers:
// one forward per batch, no gradients, dropout off; with bf16, under bf16 autocast.
nlohmann::json run_eval(PeftModel& peft, const std::vector<Example>& data, int64_t batch, int64_t pad, bool causal,
                        at::Device dev, bool bf16 = false);

}  // namespace peft
