// T5ForConditionalGeneration (T5 v1.0 and v1.1 / Flan-T5), module for module as
// transformers' modeling_t5.py: relative attention bias (bucketed; bidirectional in the
// encoder, causal in the decoder; held by block 0 and shared by all blocks of a stack), no
// scaling of attention scores, T5LayerNorm (RMS, no mean, no bias), cross attention,
// ReLU or gated-GELU feed-forward. Parameter names are transformers' (shared.weight,
// encoder.block.0.layer.0.SelfAttention.q.weight, ...), so adapters line up with HF PEFT.
#pragma once

#include "models/t5_config.h"
#include "peft/layers.h"
#include "peft/model.h"
#include "peft/seq2seq.h"

namespace peft {

class T5Attention : public Module {
 public:
  T5Attention(const T5Config& c, bool has_relative_attention_bias, bool is_decoder);
  std::string type_name() const override { return "T5Attention"; }
  // The relative position bias [1, heads, q_len, k_len] for queries at past.. past+q_len-1.
  at::Tensor compute_bias(int64_t q_len, int64_t k_len, int64_t past, at::Device device) const;
  // Self-attention (kv_states undefined; `cache` gets the new keys/values appended) or
  // cross-attention over kv_states (keys/values taken from `cross` when it holds them,
  // else computed and, with a cache, stored). `bias`: position bias plus mask, additive.
  at::Tensor forward(const at::Tensor& h, const at::Tensor& kv_states, const at::Tensor& bias, KVCache* cache,
                     at::Tensor* cross_k, at::Tensor* cross_v, size_t layer);
  std::shared_ptr<Linear> q, k, v, o;
  std::shared_ptr<Embedding> relative_attention_bias;  // block 0 only

 private:
  int64_t heads_, d_kv_, num_buckets_, max_distance_;
  bool bidirectional_;
};

class T5LayerSelfAttention : public Module {
 public:
  T5LayerSelfAttention(const T5Config& c, bool has_bias, bool is_decoder);
  std::string type_name() const override { return "T5LayerSelfAttention"; }
  std::shared_ptr<T5Attention> SelfAttention;
  std::shared_ptr<RMSNorm> layer_norm;
};

class T5LayerCrossAttention : public Module {
 public:
  explicit T5LayerCrossAttention(const T5Config& c);
  std::string type_name() const override { return "T5LayerCrossAttention"; }
  std::shared_ptr<T5Attention> EncDecAttention;
  std::shared_ptr<RMSNorm> layer_norm;
};

// DenseReluDense: wi -> act -> wo (v1.0), or act(wi_0) * wi_1 -> wo (gated, v1.1).
class T5DenseActDense : public Module {
 public:
  explicit T5DenseActDense(const T5Config& c);
  std::string type_name() const override { return gated_ ? "T5DenseGatedActDense" : "T5DenseActDense"; }
  at::Tensor forward(const at::Tensor& x);
  std::shared_ptr<Linear> wi, wi_0, wi_1, wo;

 private:
  bool gated_;
  std::string act_;
};

class T5LayerFF : public Module {
 public:
  explicit T5LayerFF(const T5Config& c);
  std::string type_name() const override { return "T5LayerFF"; }
  at::Tensor forward(const at::Tensor& h) { return h + DenseReluDense->forward(layer_norm->forward(h)); }
  std::shared_ptr<T5DenseActDense> DenseReluDense;
  std::shared_ptr<RMSNorm> layer_norm;
};

class T5Block : public Module {
 public:
  T5Block(const T5Config& c, bool has_bias, bool is_decoder);
  std::string type_name() const override { return "T5Block"; }
  // The block over h; encoder blocks get no encoder states.
  at::Tensor forward(const at::Tensor& h, const at::Tensor& self_bias, const at::Tensor& encoder_states,
                     const at::Tensor& cross_bias, Seq2SeqCache* cache, size_t index);
  std::shared_ptr<ModuleList<Module>> layer;  // self-attention, [cross-attention,] feed-forward
  std::shared_ptr<T5LayerSelfAttention> self_attention;
  std::shared_ptr<T5LayerCrossAttention> cross_attention;  // decoder only
  std::shared_ptr<T5LayerFF> ff;
};

class T5Stack : public Module {
 public:
  T5Stack(const T5Config& c, bool is_decoder);
  std::string type_name() const override { return "T5Stack"; }
  // The encoder: [b, src, d_model] for input embeddings and padding mask.
  // With `checkpoint`, each block is recomputed in backward (gradient checkpointing).
  at::Tensor encode(const at::Tensor& embeds, const at::Tensor& mask, bool checkpoint = false);
  // The decoder over decoder ids, attending to encoder_states under encoder_mask; blocks
  // are checkpointed with in.checkpoint_layers when there is no cache.
  at::Tensor decode(const Seq2SeqInputs& in, const at::Tensor& encoder_states);
  std::shared_ptr<Embedding> embed_tokens;  // tied to T5ForConditionalGeneration::shared
  std::shared_ptr<ModuleList<T5Block>> block;
  std::shared_ptr<RMSNorm> final_layer_norm;
};

class T5ForConditionalGeneration : public Model, public Seq2SeqLM {
 public:
  // arch "T5", or "MT5" (mT5 / mT0: the same architecture under its own class name).
  T5ForConditionalGeneration(const nlohmann::json& j, const std::string& where, std::string arch = "T5");
  std::string type_name() const override { return arch_ + "ForConditionalGeneration"; }
  // Its logits are [batch, target, vocab] over the vocabulary and it generates; the
  // encoder-decoder forward is Seq2SeqLM's.
  TaskKind task() const override { return TaskKind::kCausalLM; }
  int64_t num_cache_layers() const override { return cfg_.num_decoder_layers; }
  std::vector<std::string> tied_parameter_names() const override {
    return {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight"};
  }
  void tie_weights() override;
  Embedding* input_embeddings() override { return shared.get(); }
  // No output_layer(): the decoder output may be rescaled before lm_head, so a caller must
  // take logits from forward_seq2seq.

  int64_t decoder_start_token_id() const override { return cfg_.decoder_start_token_id; }
  int64_t pad_token_id() const override { return cfg_.pad_token_id; }
  const T5Config& t5_config() const { return cfg_; }

  std::shared_ptr<Embedding> shared;
  std::shared_ptr<T5Stack> encoder, decoder;
  std::shared_ptr<Linear> lm_head;

 protected:
  ModelOutputs run(const ModelInputs& in) override;
  Seq2SeqOutputs run_seq2seq(const Seq2SeqInputs& in) override;

 private:
  T5Config cfg_;
  std::string arch_;
};

}  // namespace peft
