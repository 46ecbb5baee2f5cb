// WhisperForConditionalGeneration, module for module as transformers' modeling_whisper.py:
// a convolutional front end (conv1, conv2 with stride 2, exact GELU) over log-mel
// input_features, sinusoidal encoder positions stored as a weight, pre-norm encoder and
// decoder layers (LayerNorm, q_proj scaled by head_dim**-0.5 before the product, k_proj
// without bias), learned decoder positions, cross-attention, final layer norms, and
// proj_out tied to decoder.embed_tokens. Parameter names are transformers'
// (model.encoder.layers.0.self_attn.q_proj.weight, ...), so adapters line up with HF PEFT.
#pragma once

#include "models/seq2seq_attention.h"
#include "models/whisper_config.h"
#include "peft/layers.h"
#include "peft/model.h"
#include "peft/seq2seq.h"

namespace peft {

// nn.Conv1d with kernel 3 and padding 1.
class WhisperConv1d : public Module {
 public:
  WhisperConv1d(int64_t in, int64_t out, int64_t stride);
  std::string type_name() const override { return "Conv1d"; }
  at::Tensor forward(const at::Tensor& x) const;
  at::Tensor weight, bias;

 private:
  int64_t stride_;
};

class WhisperEncoderLayer : public Module {
 public:
  explicit WhisperEncoderLayer(const WhisperConfig& c);
  std::string type_name() const override { return "WhisperEncoderLayer"; }
  at::Tensor forward(const at::Tensor& h);
  std::shared_ptr<Seq2SeqAttention> self_attn;
  std::shared_ptr<LayerNorm> self_attn_layer_norm;
  std::shared_ptr<Linear> fc1, fc2;
  std::shared_ptr<LayerNorm> final_layer_norm;

 private:
  std::string act_;
};

class WhisperDecoderLayer : public Module {
 public:
  explicit WhisperDecoderLayer(const WhisperConfig& c);
  std::string type_name() const override { return "WhisperDecoderLayer"; }
  at::Tensor forward(const at::Tensor& h, const at::Tensor& self_mask, const at::Tensor& encoder_states,
                     Seq2SeqCache* cache, size_t index);
  std::shared_ptr<Seq2SeqAttention> self_attn;
  std::shared_ptr<LayerNorm> self_attn_layer_norm;
  std::shared_ptr<Seq2SeqAttention> encoder_attn;
  std::shared_ptr<LayerNorm> encoder_attn_layer_norm;
  std::shared_ptr<Linear> fc1, fc2;
  std::shared_ptr<LayerNorm> final_layer_norm;

 private:
  std::string act_;
};

class WhisperEncoder : public Module {
 public:
  explicit WhisperEncoder(const WhisperConfig& c);
  std::string type_name() const override { return "WhisperEncoder"; }
  // [b, max_source_positions, d_model] for input_features [b, num_mel_bins, 2 * max_source_positions].
  at::Tensor forward(const at::Tensor& input_features, bool checkpoint = false);  // checkpoint: per layer
  std::shared_ptr<WhisperConv1d> conv1, conv2;
  std::shared_ptr<Embedding> embed_positions;  // sinusoids, frozen in transformers
  std::shared_ptr<ModuleList<WhisperEncoderLayer>> layers;
  std::shared_ptr<LayerNorm> layer_norm;
};

class WhisperDecoder : public Module {
 public:
  explicit WhisperDecoder(const WhisperConfig& c);
  std::string type_name() const override { return "WhisperDecoder"; }
  // The decoder over decoder_input_ids, attending to encoder_states (no encoder mask, as
  // transformers: Whisper's encoder input is always full length).
  at::Tensor forward(const Seq2SeqInputs& in, const at::Tensor& encoder_states);
  std::shared_ptr<Embedding> embed_tokens, embed_positions;
  std::shared_ptr<ModuleList<WhisperDecoderLayer>> layers;
  std::shared_ptr<LayerNorm> layer_norm;

 private:
  int64_t max_positions_;
};

// transformers' WhisperModel: the two stacks (its `model` inside the generation class).
class WhisperModel : public Module {
 public:
  explicit WhisperModel(const WhisperConfig& c);
  std::string type_name() const override { return "WhisperModel"; }
  std::shared_ptr<WhisperEncoder> encoder;
  std::shared_ptr<WhisperDecoder> decoder;
};

class WhisperForConditionalGeneration : public Model, public Seq2SeqLM {
 public:
  WhisperForConditionalGeneration(const nlohmann::json& j, const std::string& where);
  std::string type_name() const override { return "WhisperForConditionalGeneration"; }
  TaskKind task() const override { return TaskKind::kCausalLM; }  // logits over the vocabulary
  int64_t num_cache_layers() const override { return cfg_.decoder_layers; }
  std::string base_model_prefix() const override { return "model"; }
  // proj_out follows decoder.embed_tokens when tied; the encoder's sinusoids are computed
  // when a checkpoint lacks them, as transformers' _init_weights does.
  std::vector<std::string> tied_parameter_names() const override;
  void tie_weights() override;
  Embedding* input_embeddings() override { return model->decoder->embed_tokens.get(); }
  AdaptableLayer* output_layer() override { return proj_out.get(); }

  int64_t decoder_start_token_id() const override { return cfg_.decoder_start_token_id; }
  int64_t pad_token_id() const override { return cfg_.pad_token_id; }
  bool reads_audio() const override { return true; }
  int64_t max_target_positions() const override { return cfg_.max_target_positions; }
  const WhisperConfig& whisper_config() const { return cfg_; }

  std::shared_ptr<WhisperModel> model;
  std::shared_ptr<Linear> proj_out;

 protected:
  ModelOutputs run(const ModelInputs& in) override;
  Seq2SeqOutputs run_seq2seq(const Seq2SeqInputs& in) override;

 private:
  WhisperConfig cfg_;
};

}  // namespace peft
