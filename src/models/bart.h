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
// ones, no layernorm_embedding and no final_logits_bias.
#pragma once

#include "models/seq2seq_attention.h"
#include "peft/layers.h"
#include "peft/model.h"
#include "peft/seq2seq.h"

namespace peft {

struct BartConfig {
  std::string arch;  // "Bart", "MBart" or "M2M100": prefixes the type names
  bool pre_norm;     // mBART, M2M100: LayerNorm before each block, and a final layer_norm per stack
  bool sinusoidal_positions;  // M2M100: fairseq's sinusoids, not learned rows
  bool layernorm_embedding;   // BART, mBART: a LayerNorm over embeddings + positions
  bool logits_bias;           // BART, mBART: the final_logits_bias buffer
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

// M2M100's positions: fairseq's sinusoidal table (sin and cos halves; the padding row
// zero), indexed by each row's count of non-pad tokens so far plus padding_idx (padding
// itself gets the zero row), or sequentially when only embeddings are given, as
// transformers' M2M100SinusoidalPositionalEmbedding. No parameters; the rows asked for are
// computed, not a table.
class SinusoidalPositions : public Module {
 public:
  SinusoidalPositions(int64_t dim, int64_t padding_idx, std::string arch);
  std::string type_name() const override { return arch_ + "SinusoidalPositionalEmbedding"; }
  // [b, t, dim] float for positions past..past+t-1 of `ids` [b, t] (undefined: sequential).
  at::Tensor forward(const at::Tensor& ids, int64_t b, int64_t t, int64_t past, at::Device device);

 private:
  int64_t dim_, padding_idx_;
  std::string arch_;
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
  std::shared_ptr<BartScaledWordEmbedding> embed_tokens;  // model.shared's weight
  std::shared_ptr<Embedding> embed_positions;             // max_position_embeddings + 2 rows
  std::shared_ptr<SinusoidalPositions> sinusoidal_positions;  // M2M100's, instead
  std::shared_ptr<ModuleList<BartEncoderLayer>> layers;
  std::shared_ptr<LayerNorm> layernorm_embedding;
  std::shared_ptr<LayerNorm> layer_norm;  // mBART's final norm

 private:
  std::string arch_;
  int64_t max_positions_;
};

class BartDecoder : public Module {
 public:
  explicit BartDecoder(const BartConfig& c);
  std::string type_name() const override { return arch_ + "Decoder"; }
  at::Tensor forward(const Seq2SeqInputs& in, const at::Tensor& encoder_states);
  std::shared_ptr<BartScaledWordEmbedding> embed_tokens;  // model.shared's weight
  std::shared_ptr<Embedding> embed_positions;
  std::shared_ptr<SinusoidalPositions> sinusoidal_positions;  // M2M100's, instead
  std::shared_ptr<ModuleList<BartDecoderLayer>> layers;
  std::shared_ptr<LayerNorm> layernorm_embedding;
  std::shared_ptr<LayerNorm> layer_norm;  // mBART's final norm

 private:
  std::string arch_;
  int64_t max_positions_;
};

// transformers' BartModel: the shared embedding and the two stacks.
class BartModel : public Module {
 public:
  explicit BartModel(const BartConfig& c);
  std::string type_name() const override { return arch_ + "Model"; }
  std::shared_ptr<BartScaledWordEmbedding> shared;
  std::shared_ptr<BartEncoder> encoder;
  std::shared_ptr<BartDecoder> decoder;

 private:
  std::string arch_;
};

class BartForConditionalGeneration : public Model, public Seq2SeqLM {
 public:
  // `arch` "Bart", "MBart" or "M2M100".
  BartForConditionalGeneration(const nlohmann::json& j, const std::string& where, const std::string& arch = "Bart");
  std::string type_name() const override { return cfg_.arch + "ForConditionalGeneration"; }
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
  at::Tensor final_logits_bias;  // [1, vocab] buffer, zeros unless the checkpoint has others; not M2M100

 protected:
  ModelOutputs run(const ModelInputs& in) override;
  Seq2SeqOutputs run_seq2seq(const Seq2SeqInputs& in) override;

 private:
  BartConfig cfg_;
};

}  // namespace peft
