// The attention of BART's and Whisper's encoder and decoder layers (transformers'
// BartAttention, WhisperAttention): self-attention whose new keys/values go to a cache, or
// cross-attention over the encoder output whose keys/values are computed once and kept.
#pragma once

#include "peft/layers.h"
#include "peft/seq2seq.h"

namespace peft {

class Seq2SeqAttention : public Module {
 public:
  struct Options {
    std::string type;      // transformers' class name ("BartAttention", "WhisperAttention")
    bool k_bias = true;    // Whisper's k_proj has none
    bool scale_query = false;  // Whisper scales q by head_dim^-0.5 before the product; BART the scores
  };
  Seq2SeqAttention(int64_t d_model, int64_t heads, Options options);
  std::string type_name() const override { return options_.type; }
  // Self-attention (kv_states undefined; `cache` gets the new keys/values appended) or
  // cross-attention over kv_states (keys/values from `cross_k`/`cross_v` when they hold
  // them, else computed and stored there). `mask` boolean (true = may attend) or undefined
  // with `causal` for plain causal attention.
  at::Tensor forward(const at::Tensor& h, const at::Tensor& kv_states, const at::Tensor& mask, bool causal,
                     KVCache* cache, at::Tensor* cross_k, at::Tensor* cross_v, size_t layer);
  std::shared_ptr<Linear> k_proj, v_proj, q_proj, out_proj;

 private:
  int64_t heads_, head_dim_;
  Options options_;
};

// Sizes the cache's per-layer lists for a decoder of `layers` layers (no-op without a cache).
void size_seq2seq_cache(Seq2SeqCache* cache, size_t layers);

// Seq2SeqInputs::decoder_position_ids, checked: int64 [b, t] in [0, limit); `who` names
// the decoder in the error.
void check_decoder_positions(const at::Tensor& p, int64_t b, int64_t t, int64_t limit, const std::string& who);

}  // namespace peft
