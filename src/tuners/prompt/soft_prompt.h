// The input adapters behind the soft-prompt methods (prompt.h).
#pragma once

#include <ATen/core/Tensor.h>

#include "peft/model.h"

namespace peft {

// Virtual token embeddings [n, dim] prepended to the input embeddings. The first forward
// of a generation (empty cache) prepends them; later steps only extend the mask and
// positions, whose count includes them.
class SoftPrompt : public InputAdapter {
 public:
  // `slot`: the parameter's name ("prompt_embeddings" as saved; P-tuning trains
  // "embedding.weight" through its encoder instead).
  SoftPrompt(int64_t n, int64_t dim, const std::string& slot = "prompt_embeddings");
  std::string type_name() const override { return "SoftPrompt"; }
  int64_t prepare(Model& model, ModelInputs& in) override;
  std::vector<std::pair<std::string, at::Tensor>> saved_tensors() override;
  virtual at::Tensor prompts() { return embedding; }  // [n, dim]

  at::Tensor embedding;
  int64_t n, dim;
};

// P-tuning's encoder: prompts = MLP(embedding) or MLP(BiLSTM(embedding)), HF's layout
// (mlp_head.{0,2,4}, lstm_head.*_l{k}[_reverse]).
class PromptEncoder : public SoftPrompt {
 public:
  PromptEncoder(int64_t n, int64_t dim, int64_t hidden, bool lstm, int64_t lstm_layers, double dropout);
  std::string type_name() const override { return "PromptEncoder"; }
  at::Tensor prompts() override;

  std::vector<at::Tensor> mlp;   // weight, bias per Linear
  std::vector<at::Tensor> lstm;  // per layer and direction: w_ih, w_hh, b_ih, b_hh
  bool use_lstm;
  int64_t lstm_layers;
  double dropout;
};

// Prefix tuning: per-layer keys and values [n, layers * 2 * kv_dim] put in the KV cache
// before the model runs; optionally produced by an MLP (HF's "transform") while training.
class PrefixEncoder : public InputAdapter {
 public:
  PrefixEncoder(int64_t n, int64_t layers, int64_t heads, int64_t head_dim, bool projection, int64_t token_dim,
                int64_t hidden);
  std::string type_name() const override { return "PrefixEncoder"; }
  int64_t prepare(Model& model, ModelInputs& in) override;
  std::vector<std::pair<std::string, at::Tensor>> saved_tensors() override;
  at::Tensor past();  // [n, layers * 2 * heads * head_dim]

  at::Tensor embedding;
  std::vector<at::Tensor> transform;  // Linear(token_dim, hidden), tanh, Linear(hidden, layers*2*kv_dim)
  int64_t n, layers, heads, head_dim;
  bool projection;

 private:
  KVCache scratch_;  // the cache of a forward that was given none
};

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
