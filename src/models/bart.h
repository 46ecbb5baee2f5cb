// BartForConditionalGeneration, module for module as transformers' modeling_bart.py: token
// embeddings shared by encoder, decoder and lm_head (scaled by sqrt(d_model) with
// scale_embedding), learned positions offset by 2, layernorm_embedding, post-norm encoder
// and decoder layers (q/k/v/out_proj with bias), cross-attention over the encoder output,
// and final_logits_bias (a buffer) added to the logits. Parameter names are transformers'
// (model.encoder.layers.0.self_attn.q_proj.weight, ...), so adapters line up with HF PEFT.
#pragma once

#include "peft/layers.h"
#include "peft/model.h"
#include "peft/seq2seq.h"

namespace peft {

struct BartConfig {
  int64_t vocab_size, d_model, encoder_layers, decoder_layers, encoder_ffn_dim, decoder_ffn_dim,
      encoder_attention_heads, decoder_attention_heads, max_position_embeddings;
  std::string activation_function;
  bool scale_embedding, tie_word_embeddings;
  int64_t pad_token_id, decoder_start_token_id;
  static BartConfig from_json(const nlohmann::json& j, const std::string& where);
};

// nn.Embedding whose output is multiplied by embed_scale (1, or sqrt(d_model) with
// scale_embedding), as the input embeddings' own forward: soft prompts and trainable
// tokens see the scaled rows too, as in transformers.
class BartScaledWordEmbedding : public Embedding {
 public:
  BartScaledWordEmbedding(int64_t num_embeddings, int64_t embedding_dim, double embed_scale);
  std::string type_name() const override { return "BartScaledWordEmbedding"; }
  at::Tensor forward_with_weight(const at::Tensor& ids, const at::Tensor& table) override;

 private:
  double embed_scale_;
};

class BartAttention : public Module {
 public:
  BartAttention(int64_t d_model, int64_t heads);
  std::string type_name() const override { return "BartAttention"; }
  // Self-attention (kv_states undefined; `cache` gets the new keys/values appended) or
  // cross-attention over kv_states (keys/values from `cross_k`/`cross_v` when they hold
  // them, else computed and stored there). `mask` boolean (true = may attend) or undefined
  // with `causal` for plain causal attention.
  at::Tensor forward(const at::Tensor& h, const at::Tensor& kv_states, const at::Tensor& mask, bool causal,
                     KVCache* cache, at::Tensor* cross_k, at::Tensor* cross_v, size_t layer);
  std::shared_ptr<Linear> k_proj, v_proj, q_proj, out_proj;

 private:
  int64_t heads_, head_dim_;
};

class BartEncoderLayer : public Module {
 public:
  explicit BartEncoderLayer(const BartConfig& c);
  std::string type_name() const override { return "BartEncoderLayer"; }
  at::Tensor forward(const at::Tensor& h, const at::Tensor& mask);
  std::shared_ptr<BartAttention> self_attn;
  std::shared_ptr<LayerNorm> self_attn_layer_norm;
  std::shared_ptr<Linear> fc1, fc2;
  std::shared_ptr<LayerNorm> final_layer_norm;

 private:
  std::string act_;
};

class BartDecoderLayer : public Module {
 public:
  explicit BartDecoderLayer(const BartConfig& c);
  std::string type_name() const override { return "BartDecoderLayer"; }
  at::Tensor forward(const at::Tensor& h, const at::Tensor& self_mask, const at::Tensor& encoder_states,
                     const at::Tensor& cross_mask, Seq2SeqCache* cache, size_t index);
  std::shared_ptr<BartAttention> self_attn;
  std::shared_ptr<LayerNorm> self_attn_layer_norm;
  std::shared_ptr<BartAttention> encoder_attn;
  std::shared_ptr<LayerNorm> encoder_attn_layer_norm;
  std::shared_ptr<Linear> fc1, fc2;
  std::shared_ptr<LayerNorm> final_layer_norm;

 private:
  std::string act_;
};

class BartEncoder : public Module {
 public:
  explicit BartEncoder(const BartConfig& c);
  std::string type_name() const override { return "BartEncoder"; }
  // embeds [b, s, d] (already scaled), mask [b, s] (1 = real) or undefined.
  at::Tensor forward(const at::Tensor& embeds, const at::Tensor& mask);
  std::shared_ptr<BartScaledWordEmbedding> embed_tokens;  // model.shared's weight
  std::shared_ptr<Embedding> embed_positions;             // max_position_embeddings + 2 rows
  std::shared_ptr<ModuleList<BartEncoderLayer>> layers;
  std::shared_ptr<LayerNorm> layernorm_embedding;
};

class BartDecoder : public Module {
 public:
  explicit BartDecoder(const BartConfig& c);
  std::string type_name() const override { return "BartDecoder"; }
  at::Tensor forward(const Seq2SeqInputs& in, const at::Tensor& encoder_states);
  std::shared_ptr<BartScaledWordEmbedding> embed_tokens;  // model.shared's weight
  std::shared_ptr<Embedding> embed_positions;
  std::shared_ptr<ModuleList<BartDecoderLayer>> layers;
  std::shared_ptr<LayerNorm> layernorm_embedding;

 private:
  int64_t max_positions_;
};

// transformers' BartModel: the shared embedding and the two stacks.
class BartModel : public Module {
 public:
  explicit BartModel(const BartConfig& c);
  std::string type_name() const override { return "BartModel"; }
  std::shared_ptr<BartScaledWordEmbedding> shared;
  std::shared_ptr<BartEncoder> encoder;
  std::shared_ptr<BartDecoder> decoder;
};

class BartForConditionalGeneration : public Model, public Seq2SeqLM {
 public:
  BartForConditionalGeneration(const nlohmann::json& j, const std::string& where);
  std::string type_name() const override { return "BartForConditionalGeneration"; }
  TaskKind task() const override { return TaskKind::kCausalLM; }  // logits over the vocabulary
  int64_t num_cache_layers() const override { return cfg_.decoder_layers; }
  std::string base_model_prefix() const override { return "model"; }
  // With tie_word_embeddings the encoder's and decoder's embed_tokens and lm_head are
  // model.shared; without, transformers 5 keeps four tables.
  std::vector<std::string> tied_parameter_names() const override;
  void tie_weights() override;
  // transformers' get_input_embeddings(): what soft prompts embed with.
  Embedding* input_embeddings() override { return model->shared.get(); }
  int64_t max_positions() const override { return cfg_.max_position_embeddings; }

  int64_t decoder_start_token_id() const override { return cfg_.decoder_start_token_id; }
  int64_t pad_token_id() const override { return cfg_.pad_token_id; }
  int64_t max_target_positions() const override { return cfg_.max_position_embeddings; }

  std::shared_ptr<BartModel> model;
  std::shared_ptr<Linear> lm_head;
  at::Tensor final_logits_bias;  // [1, vocab] buffer, zeros unless the checkpoint has others

 protected:
  ModelOutputs run(const ModelInputs& in) override;
  Seq2SeqOutputs run_seq2seq(const Seq2SeqInputs& in) override;

 private:
  BartConfig cfg_;
};

}  // namespace peft
