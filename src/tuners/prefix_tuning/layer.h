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
  virtual at::Tensor past();  // [n, layers * 2 * heads * head_dim]
  at::Tensor row_prefix() override;  // decoder-only models (one submodule)

  at::Tensor embedding;
  std::vector<at::Tensor> transform;  // Linear(token_dim, hidden), tanh, Linear(hidden, layers*2*kv_dim)
  int64_t n, layers, heads, head_dim;
  bool projection;
  int64_t submodules = 1;  // num_transformer_submodules

 protected:
  struct NoSlots {};
  // For encoders that keep the prefix in their own slots (CARTRIDGE): none registered here.
  PrefixEncoder(NoSlots, int64_t n, int64_t layers, int64_t heads, int64_t head_dim)
      : n(n), layers(layers), heads(heads), head_dim(head_dim), projection(false) {}

 private:
  KVCache scratch_;             // the cache of a forward that was given none
  Seq2SeqCache seq2seq_scratch_;  // the same for an encoder-decoder forward
};

struct PrefixTuningConfig;
// The config's sizes checked against `model` (a KV cache of num_layers layers, token_dim =
// kv heads x head_dim, the submodules); returns head_dim. Errors name config.peft_type().
int64_t checked_prefix_head_dim(const PrefixTuningConfig& config, Model& model);

}  // namespace peft
