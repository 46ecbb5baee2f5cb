// CPT's input adapter (HF's CPTEmbedding): frozen template embeddings plus a trained delta
// projected into each token's epsilon ball before every use.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include "tuners/prompt_learning/prompt_learning.h"

namespace peft {

class CptPrompt : public SoftPrompt {
 public:
  // `types`: cpt_tokens_type_mask; `eps_format`, `eps_input`: the config's epsilons
  // (scaled here by sqrt(dim / 2048), as HF's get_epsilon does).
  CptPrompt(int64_t n, int64_t dim, std::vector<int64_t> types, double eps_format, double eps_input);
  std::string type_name() const override { return "CptPrompt"; }
  // embedding + delta, the delta first projected in place (HF's forward sets
  // delta_embedding.weight.data = get_projection()); gradients reach the delta rows of
  // input and format tokens only (HF's backward hook).
  at::Tensor prompts() override;
  std::vector<at::Tensor*> trainable_slots() override { return {&delta}; }

  // HF's get_epsilon: per token, [n] float32.
  at::Tensor epsilon() const;
  // HF's get_projection: the delta with each nonzero row scaled to norm <= its epsilon.
  at::Tensor projected_delta() const;
  // HF's backward hook's mask: type % 4 in {1, 2, 3}, [n, 1] bool.
  at::Tensor gradient_mask() const;

  at::Tensor delta;  // HF's delta_embedding.weight [n, dim]; `embedding` is embedding.weight

  // What the loss needs of the config.
  std::vector<int64_t> token_ids, types;
  double eps_format, eps_input;
  std::string loss_type = "none";
  double decay_factor = 1.0;
};

}  // namespace peft
