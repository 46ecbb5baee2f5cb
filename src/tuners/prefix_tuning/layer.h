// Prefix tuning: the input adapter.
#pragma once

#include <ATen/core/Tensor.h>

#include "peft/model.h"
#include "tuners/prompt_learning/prompt_learning.h"

namespace peft {

// Prefix tuning: per-layer keys and values [n, layers * 2 * kv_dim] put in the KV cache
// before the model runs; optionally produced by an MLP (HF's "transform") while training.
// Encoder-decoder models (num_transformer_submodules 2): the decoder's self-attention
// gets them as HF PEFT 0.21 hands them over (see prepare_seq2seq); the encoder and the
// cross-attention get none.
class PrefixEncoder : public InputAdapter, public Seq2SeqInputAdapter {
 public:
  PrefixEncoder(int64_t n, int64_t layers, int64_t heads, int64_t head_dim, bool projection, int64_t token_dim,
                int64_t hidden);
  std::string type_name() const override { return "PrefixEncoder"; }
  int64_t prepare(Model& model, ModelInputs& in) override;
  void prepare_seq2seq(Model& model, Seq2SeqInputs& in) override;
  std::vector<std::pair<std::string, at::Tensor>> saved_tensors() override;
  at::Tensor past();  // [n, layers * 2 * heads * head_dim]

  at::Tensor embedding;
  std::vector<at::Tensor> transform;  // Linear(token_dim, hidden), tanh, Linear(hidden, layers*2*kv_dim)
  int64_t n, layers, heads, head_dim;
  bool projection;
  int64_t submodules = 1;  // num_transformer_submodules

 private:
  KVCache scratch_;             // the cache of a forward that was given none
  Seq2SeqCache seq2seq_scratch_;  // the same for an encoder-decoder forward
};

}  // namespace peft
