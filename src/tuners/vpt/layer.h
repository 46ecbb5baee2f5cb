// Visual prompt tuning: the input adapter.
#pragma once

#include <ATen/core/Tensor.h>

#include "peft/model.h"
#include "tuners/prompt_learning/prompt_learning.h"

namespace peft {

// Visual prompt tuning: prompts [1 or layers, n, hidden] placed after [CLS].
class VisualPrompts : public InputAdapter {
 public:
  VisualPrompts(int64_t layers, int64_t n, int64_t hidden, bool deep);
  std::string type_name() const override { return "VisualPrompts"; }
  int64_t prepare(Model& model, ModelInputs& in) override;

  at::Tensor vpt_prompts;
  int64_t n;
  bool deep;
};

}  // namespace peft
