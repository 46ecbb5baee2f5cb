// P-tuning: the input adapter.
#pragma once

#include <ATen/core/Tensor.h>

#include "peft/model.h"
#include "tuners/prompt_learning/prompt_learning.h"

namespace peft {

// P-tuning's encoder: prompts = MLP(embedding) or MLP(BiLSTM(embedding)), HF's layout
// (mlp_head.{0,2,4}, lstm_head.*_l{k}[_reverse]).
class PromptEncoder : public SoftPrompt {
 public:
  // `rows`: the embedding's rows, n times the transformer submodules (0: n).
  PromptEncoder(int64_t n, int64_t dim, int64_t hidden, bool lstm, int64_t lstm_layers, double dropout,
                int64_t rows = 0);
  std::string type_name() const override { return "PromptEncoder"; }
  at::Tensor prompts() override;

  std::vector<at::Tensor> mlp;   // weight, bias per Linear
  std::vector<at::Tensor> lstm;  // per layer and direction: w_ih, w_hh, b_ih, b_hh
  bool use_lstm;
  int64_t lstm_layers;
  double dropout;
};

}  // namespace peft
