// Prefix tuning: the input adapter.
#pragma once

#include <ATen/core/Tensor.h>

#include "peft/model.h"
#include "tuners/prompt_learning/prompt_learning.h"

namespace peft {

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

}  // namespace peft
