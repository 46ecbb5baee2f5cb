// Encoder-decoder models (T5): their inputs and outputs, the decoder's cache, and
// generation. Such a model is a Model like any other for names, loading, adapters and
// saving; its forward takes encoder and decoder inputs, so it also implements Seq2SeqLM
// (Model::forward, which takes one token sequence, refuses it with a message).
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "peft/generate.h"
#include "peft/model.h"

namespace peft {

// The decoder's keys and values: self-attention grows by the new positions every step;
// cross-attention over the encoder output is computed on the first step and reused.
struct Seq2SeqCache {
  KVCache self_attn;
  std::vector<at::Tensor> cross_keys, cross_values;  // per decoder layer, [b, heads, src, d_kv]
  int64_t length() const { return self_attn.length(); }
};

struct Seq2SeqInputs {
  at::Tensor input_ids;               // encoder tokens [batch, src] int64
  at::Tensor inputs_embeds;           // encoder input embeddings [batch, src, d_model], instead of input_ids
  at::Tensor input_features;          // audio encoders (Whisper): log-mel [batch, mel_bins, frames] float
  at::Tensor attention_mask;          // encoder padding [batch, src], 1 = real; undefined = all real
  at::Tensor encoder_hidden_states;   // given: the encoder does not run (decoding steps)
  at::Tensor decoder_input_ids;       // [batch, tgt] int64
  at::Tensor decoder_attention_mask;  // [batch, past + tgt]; undefined = causal only, as transformers
  // [batch, tgt] each decoder token's position; undefined: past .. past + tgt - 1. Rows
  // left-padded in a shared cache (a serving batch) need their own. T5 reads none: its
  // relative positions come from cache columns, which padding shifts for queries and keys
  // alike.
  at::Tensor decoder_position_ids;
  Seq2SeqCache* cache = nullptr;      // read and extended when given
  // Gradient checkpointing: each encoder and decoder layer is recomputed in backward
  // instead of keeping its activations (decoder layers only without a cache).
  bool checkpoint_layers = false;
};

struct Seq2SeqOutputs {
  at::Tensor logits;                     // [batch, tgt, vocab]
  at::Tensor encoder_last_hidden_state;  // [batch, src, d_model]
};

// An input adapter that also works on encoder-decoder models (HF PEFT's
// PeftModelForSeq2SeqLM): soft prompts before the encoder's input, key/value prefixes in
// the decoder's self-attention cache. Other input adapters are refused there by name.
class Seq2SeqInputAdapter {
 public:
  virtual ~Seq2SeqInputAdapter() = default;
  // Rewrites `in` for `model` at the start of every forward_seq2seq.
  virtual void prepare_seq2seq(Model& model, Seq2SeqInputs& in) = 0;
};

class Seq2SeqLM {
 public:
  virtual ~Seq2SeqLM() = default;
  // Runs the model. With an input adapter installed (Model::input_adapter) the inputs are
  // rewritten first; encoder_last_hidden_state then includes the encoder's virtual tokens,
  // as HF's does, and may be passed back as encoder_hidden_states with the caller's
  // attention_mask (the adapter extends the mask on every call).
  Seq2SeqOutputs forward_seq2seq(const Seq2SeqInputs& in);
  virtual int64_t decoder_start_token_id() const = 0;
  virtual int64_t pad_token_id() const = 0;
  // decoder_input_ids for labels [b, t] (-100 = ignored), as the model's forward derives
  // them: shift_right with decoder_start_token_id (mBART wraps each row's last token).
  virtual at::Tensor decoder_inputs_from_labels(const at::Tensor& labels) const;
  // True when the encoder reads Seq2SeqInputs::input_features (speech), not token ids.
  virtual bool reads_audio() const { return false; }
  // The decoder's learned positions, the longest prompt plus labels it takes; 0: no limit
  // (T5's relative positions).
  virtual int64_t max_target_positions() const { return 0; }

 protected:
  virtual Seq2SeqOutputs run_seq2seq(const Seq2SeqInputs& in) = 0;
  // For the model's Model::run: one token sequence is not an encoder-decoder's input;
  // `takes` says what is ("encoder and decoder inputs").
  [[noreturn]] static void refuse_one_sequence(const std::string& model, const std::string& takes);
};

// The model's encoder-decoder interface, or nullptr for decoder-only and encoder models.
Seq2SeqLM* as_seq2seq(Model& model);

// transformers' _shift_right: decoder inputs from labels [b, t]: decoder_start first, the
// labels after it one position later, -100 replaced by pad.
at::Tensor shift_right(const at::Tensor& labels, int64_t decoder_start, int64_t pad);

// generate() for encoder-decoder models: the prompts are the encoder's input (padded
// together, masked), the decoder starts from decoder_start_token_id and runs with the
// cache. Returns, per row, the prompt followed by the generated tokens (decoder_start not
// included), up to and including an EOS token, as generate() does.
std::vector<std::vector<int64_t>> generate_seq2seq(Model& model, const std::vector<std::vector<int64_t>>& prompts,
                                                   const GenerationConfig& cfg);

}  // namespace peft
