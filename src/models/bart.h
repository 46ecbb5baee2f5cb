// BartForConditionalGeneration and MBartForConditionalGeneration, module for module as
// transformers' modeling_bart.py and modeling_mbart.py: token embeddings shared by encoder,
// decoder and lm_head (scaled by sqrt(d_model) with scale_embedding), learned positions
// offset by 2, layernorm_embedding, post-norm encoder and decoder layers (q/k/v/out_proj
// with bias), cross-attention over the encoder output, and final_logits_bias (a buffer)
// added to the logits. Parameter names are transformers'
// (model.encoder.layers.0.self_attn.q_proj.weight, ...), so adapters line up with HF PEFT.
// mBART is the same with pre-norm layers, a final layer_norm per stack, and decoder inputs
// that start with each label row's last token (its language id). M2M100 (and NLLB, which
// is M2M100) is mBART's layout with fairseq's sinusoidal positions in place of learned
// ones, no layernorm_embedding and no final_logits_bias. Marian (MarianMTModel, the
// opus-mt translators) is BART's post-norm layout and Pegasus mBART's pre-norm one, both
// with a fixed sinusoid table in place of learned rows, no layernorm_embedding, and plain
// nn.Embedding tokens that the stacks scale (the encoder only when it embeds the ids).
#pragma once

#include "models/seq2seq_attention.h"
#include "peft/layers.h"
#include "peft/model.h"
#include "peft/seq2seq.h"

namespace peft {

struct BartConfig {
  enum class Positions {
    kLearned,        // BART, mBART: learned rows offset by 2
    kFairseq,        // M2M100: sinusoids counted over each row's non-pad tokens, no parameters
    kSinusoidTable,  // Marian, Pegasus: a fixed sinusoid table (a buffer), indexed from 0
  };
  std::string arch;  // "Bart", "MBart", "M2M100", "Marian" or "Pegasus": prefixes the type names
  bool pre_norm;     // mBART, M2M100, Pegasus: LayerNorm before each block, and a final layer_norm per stack
  Positions positions;
  bool layernorm_embedding;   // BART, mBART: a LayerNorm over embeddings + positions
  bool logits_bias;           // all but M2M100: the final_logits_bias buffer
  bool stacks_scale_tokens;   // Marian, Pegasus: nn.Embedding tokens, scaled by the encoder and decoder
  int64_t vocab_size, d_model, encoder_layers, decoder_layers, encoder_ffn_dim, decoder_ffn_dim,
      encoder_attention_heads, decoder_attention_heads, max_position_embeddings;
  std::string activation_function;
  bool scale_embedding, tie_word_embeddings;
  int64_t pad_token_id, decoder_start_token_id;
  static BartConfig from_json(const nlohmann::json& j, const std::string& where, const std::string& arch = "Bart");
};

// nn.Embedding whose output is multiplied by embed_scale (1, or sqrt(d_model) with
// scale_embedding), as the input embeddings' own forward: soft prompts and trainable
// tokens see the scaled rows too, as in transformers.
class BartScaledWordEmbedding : public Embedding {
 public:
  BartScaledWordEmbedding(int64_t num_embeddings, int64_t embedding_dim, double embed_scale,
                          std::string arch = "Bart");
  std::string type_name() const override { return arch_ + "ScaledWordEmbedding"; }
  at::Tensor forward_with_weight(const at::Tensor& ids, const at::Tensor& table) override;

 private:
  double embed_scale_;
  std::string arch_;
};

// Sinusoidal position vectors, under transformers' <Arch>SinusoidalPositionalEmbedding.
class SinusoidalPositions : public Module {
 public:
  explicit SinusoidalPositions(std::string arch) : arch_(std::move(arch)) {}
  std::string type_name() const override { return arch_ + "SinusoidalPositionalEmbedding"; }
  // [b, t, dim] or [t, dim] for positions past..past+t-1 of `ids` [b, t] (undefined: the
  // embeddings were given, and positions run sequentially).
  virtual at::Tensor forward(const at::Tensor& ids, int64_t b, int64_t t, int64_t past, at::Device device) = 0;
  // [b, t, dim] at the given 0-based positions [b, t] of `ids` (each row's own count, for
  // rows left-padded in a shared cache).
  virtual at::Tensor at_positions(const at::Tensor& ids, const at::Tensor& positions, at::Device device) = 0;

 private:
  std::string arch_;
};

// M2M100's: fairseq's sinusoids (sin and cos halves; the padding row zero), indexed by each
// row's count of non-pad tokens so far plus padding_idx (padding itself gets the zero row),
// or sequentially when only embeddings are given. No parameters (transformers' table is a
// non-persistent buffer); the rows asked for are computed, not a table.
class FairseqSinusoids : public SinusoidalPositions {
 public:
  FairseqSinusoids(int64_t dim, int64_t padding_idx, std::string arch);
  at::Tensor forward(const at::Tensor& ids, int64_t b, int64_t t, int64_t past, at::Device device) override;
  at::Tensor at_positions(const at::Tensor& ids, const at::Tensor& positions, at::Device device) override;

 private:
  at::Tensor rows(const at::Tensor& table_index, at::Device device) const;  // [b, t] indices into fairseq's table
  int64_t dim_, padding_idx_;
};

// Marian's and Pegasus's: a frozen nn.Embedding of max_position_embeddings rows, XLM's
// sinusoids with the sin features first and the cos ones after (not interleaved), indexed
// 0, 1, ... whatever the padding. `weight` is a buffer: a checkpoint that holds it
// (Pegasus saves it; Marian does not) supplies it, as in transformers.
class SinusoidTable : public SinusoidalPositions {
 public:
  SinusoidTable(int64_t positions, int64_t dim, std::string arch);
  at::Tensor forward(const at::Tensor& ids, int64_t b, int64_t t, int64_t past, at::Device device) override;
  at::Tensor at_positions(const at::Tensor& ids, const at::Tensor& positions, at::Device device) override;
  at::Tensor weight;  // [positions, dim]
};

class BartEncoderLayer : public Module {
 public:
  explicit BartEncoderLayer(const BartConfig& c);
  std::string type_name() const override { return arch_ + "EncoderLayer"; }
  at::Tensor forward(const at::Tensor& h, const at::Tensor& mask);
  std::shared_ptr<Seq2SeqAttention> self_attn;
  std::shared_ptr<LayerNorm> self_attn_layer_norm;
  std::shared_ptr<Linear> fc1, fc2;
  std::shared_ptr<LayerNorm> final_layer_norm;

 private:
  std::string arch_, act_;
  bool pre_norm_;
};

class BartDecoderLayer : public Module {
 public:
  explicit BartDecoderLayer(const BartConfig& c);
  std::string type_name() const override { return arch_ + "DecoderLayer"; }
  at::Tensor forward(const at::Tensor& h, const at::Tensor& self_mask, const at::Tensor& encoder_states,
                     const at::Tensor& cross_mask, Seq2SeqCache* cache, size_t index);
  std::shared_ptr<Seq2SeqAttention> self_attn;
  std::shared_ptr<LayerNorm> self_attn_layer_norm;
  std::shared_ptr<Seq2SeqAttention> encoder_attn;
  std::shared_ptr<LayerNorm> encoder_attn_layer_norm;
  std::shared_ptr<Linear> fc1, fc2;
  std::shared_ptr<LayerNorm> final_layer_norm;

 private:
  std::string arch_, act_;
  bool pre_norm_;
};

class BartEncoder : public Module {
 public:
  explicit BartEncoder(const BartConfig& c);
  std::string type_name() const override { return arch_ + "Encoder"; }
  // embeds [b, s, d] (already scaled), mask [b, s] (1 = real) or undefined; `checkpoint`:
  // each layer is recomputed in backward; `ids`: the ids embedded, when they were (M2M100
  // counts positions over them).
  at::Tensor forward(const at::Tensor& embeds, const at::Tensor& mask, bool checkpoint = false,
                     const at::Tensor& ids = {});
  // embed_tokens(ids), scaled as transformers' encoder does.
  at::Tensor embed(const at::Tensor& ids);
  std::shared_ptr<Embedding> embed_tokens;     // model.shared's weight
  std::shared_ptr<Embedding> embed_positions;  // max_position_embeddings + 2 rows
  std::shared_ptr<SinusoidalPositions> sinusoidal_positions;  // M2M100's, Marian's, Pegasus's, instead
  std::shared_ptr<ModuleList<BartEncoderLayer>> layers;
  std::shared_ptr<LayerNorm> layernorm_embedding;
  std::shared_ptr<LayerNorm> layer_norm;  // mBART's final norm

 private:
  std::string arch_;
  int64_t max_positions_;
  double embed_scale_;  // applied here (Marian, Pegasus) rather than by embed_tokens
};

class BartDecoder : public Module {
 public:
  explicit BartDecoder(const BartConfig& c);
  std::string type_name() const override { return arch_ + "Decoder"; }
  at::Tensor forward(const Seq2SeqInputs& in, const at::Tensor& encoder_states);
  std::shared_ptr<Embedding> embed_tokens;  // model.shared's weight
  std::shared_ptr<Embedding> embed_positions;
  std::shared_ptr<SinusoidalPositions> sinusoidal_positions;  // M2M100's, Marian's, Pegasus's, instead
  std::shared_ptr<ModuleList<BartDecoderLayer>> layers;
  std::shared_ptr<LayerNorm> layernorm_embedding;
  std::shared_ptr<LayerNorm> layer_norm;  // mBART's final norm

 private:
  std::string arch_;
  int64_t max_positions_;
  double embed_scale_;
};

// transformers' BartModel: the shared embedding and the two stacks.
class BartModel : public Module {
 public:
  explicit BartModel(const BartConfig& c);
  std::string type_name() const override { return arch_ + "Model"; }
  std::shared_ptr<Embedding> shared;
  std::shared_ptr<BartEncoder> encoder;
  std::shared_ptr<BartDecoder> decoder;

 private:
  std::string arch_;
};

class BartForConditionalGeneration : public Model, public Seq2SeqLM {
 public:
  // `arch` "Bart", "MBart", "M2M100", "Marian" or "Pegasus".
  BartForConditionalGeneration(const nlohmann::json& j, const std::string& where, const std::string& arch = "Bart");
  std::string type_name() const override;  // MarianMTModel, or <Arch>ForConditionalGeneration
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
  at::Tensor decoder_inputs_from_labels(const at::Tensor& labels) const override;

  std::shared_ptr<BartModel> model;
  std::shared_ptr<Linear> lm_head;
  at::Tensor final_logits_bias;  // [1, vocab] buffer, zeros unless the checkpoint has others; not M2M100's

 protected:
  ModelOutputs run(const ModelInputs& in) override;
  Seq2SeqOutputs run_seq2seq(const Seq2SeqInputs& in) override;

 private:
  BartConfig cfg_;
};

}  // namespace peft
