// The serving engine's rows (engine.cpp, engine_seq2seq.cpp): a running request, and for
// encoder-decoder models what its encoder left.
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <chrono>
#include <vector>

#include "peft/engine.h"

namespace peft {

struct Engine::Running {
  uint64_t id;
  ServeRequest req;
  int64_t generated = 0;
  int64_t next_input = 0;  // the token the next decode step feeds
  int64_t position = 0;    // its position id
  int64_t reserved = 0;    // KV positions held
  at::Generator gen;
  // What the processors read, as transformers' input_ids: the prompt (an encoder-decoder's
  // decoder_start), then the tokens generated; prompt_len counts the first part.
  std::vector<int64_t> sequence;
  int64_t prompt_len = 0;
  std::chrono::steady_clock::time_point submitted, last_token;

  // The next token from this row's logits [1, vocab]: transformers' logits processors over
  // the sequence so far, then the argmax or a draw.
  int64_t choose(const at::Tensor& logits);
};

// What the encoder of an encoder-decoder model left for each running request: its output,
// its padding mask and every decoder layer's cross-attention keys and values, rows in the
// order of the running requests and source positions right-padded to the longest.
struct Engine::EncoderRows {
  at::Tensor states;  // [rows, src, d_model]
  at::Tensor mask;    // [rows, src] int64, 1 = a real position
  std::vector<at::Tensor> cross_keys, cross_values;  // per decoder layer, [rows, heads, src, d_kv]

  bool empty() const { return !states.defined(); }
  // Adds `fresh`'s rows after these, the narrower side's source positions right-padded.
  void append(EncoderRows fresh);
  // Keeps the rows `rows` (int64, on the device), in that order, and drops source positions
  // no row uses any more.
  void keep(const at::Tensor& rows);
};

}  // namespace peft
