// DeBERTa-v2 and -v3 (DebertaV2Model, DebertaV2ForSequenceClassification,
// DebertaV2ForTokenClassification) with transformers' names: disentangled attention, where
// content-to-position and position-to-content scores over (log-bucketed) relative
// positions are added to the content scores; optional absolute positions, token types,
// an embedding projection, a LayerNorm over the relative embeddings and a convolution
// beside the first layer (deberta-v2-xlarge).
#pragma once

#include "models/bert.h"
#include "peft/layers.h"
#include "peft/model.h"

namespace peft {

struct DebertaV2Config {
  int64_t vocab_size, hidden_size, num_layers, num_heads, head_dim, intermediate_size, max_position_embeddings,
      type_vocab_size, embedding_size;
  double layer_norm_eps;
  std::string hidden_act, pooler_hidden_act, conv_act;
  bool position_biased_input, relative_attention, share_att_key, c2p, p2c, norm_rel_embeddings;
  int64_t pos_att_count;  // entries in pos_att_type, as DeBERTa (v1) counts them for its scale
  bool talking_head;      // DeBERTa (v1): head_logits_proj / head_weights_proj mix the heads
  // Relative positions: ids in [-max_relative_positions, max_relative_positions], log-bucketed
  // to position_buckets when > 0; the relative embeddings have 2 * att_span rows.
  int64_t max_relative_positions, position_buckets, att_span;
  int64_t conv_kernel_size, conv_groups;  // conv_kernel_size 0: no convolution
  static DebertaV2Config from_json(const nlohmann::json& j, const std::string& where);
  // 1 + one per relative score type: the content and relative scores are divided by
  // sqrt(head_dim * scale_factor()).
  int64_t scale_factor() const { return 1 + (c2p ? 1 : 0) + (p2c ? 1 : 0); }
};

// transformers' build_relative_position (+ make_log_bucket_position): [s, s] ids q - k.
at::Tensor deberta_relative_positions(int64_t s, const DebertaV2Config& c, at::Device device);

class DebertaV2Embeddings : public Module {
 public:
  explicit DebertaV2Embeddings(const DebertaV2Config& c);
  std::string type_name() const override { return "DebertaV2Embeddings"; }
  // LayerNorm(embed_proj(words + positions + types)), zero on padding (mask [b, s]).
  at::Tensor forward(const at::Tensor& ids, const at::Tensor& types, const at::Tensor& positions,
                     const at::Tensor& inputs_embeds, const at::Tensor& mask);
  std::shared_ptr<Embedding> word_embeddings, position_embeddings, token_type_embeddings;  // the last two optional
  std::shared_ptr<Linear> embed_proj;                                                        // optional
  std::shared_ptr<LayerNorm> LayerNorm_;
};

// What both DeBERTa bodies compute before their layers: the embeddings (zero on padding),
// `real` [b, s] (true on tokens) and the pairwise mask [b, 1, s, s] (a query on padding sees
// no key, and so every key alike, as in transformers). Checks the mask's and token types' shapes.
struct DebertaInputs {
  at::Tensor embeddings, real, mask;
};
DebertaInputs deberta_inputs(const ModelInputs& in, DebertaV2Embeddings& embeddings, const DebertaV2Config& c,
                             const std::string& model);

class DisentangledSelfAttention : public Module {
 public:
  explicit DisentangledSelfAttention(const DebertaV2Config& c);
  std::string type_name() const override { return "DisentangledSelfAttention"; }
  // h [b, s, hidden], mask [b, 1, s, s] (true = may attend), relative_pos [s, s] and
  // rel_embeddings [2 * att_span, hidden] (both undefined without relative attention).
  at::Tensor forward(const at::Tensor& h, const at::Tensor& mask, const at::Tensor& relative_pos,
                     const at::Tensor& rel_embeddings);
  std::shared_ptr<Linear> query_proj, key_proj, value_proj;
  std::shared_ptr<Linear> pos_key_proj, pos_query_proj;  // without share_att_key, for c2p / p2c

 private:
  // The c2p and p2c scores [b, heads, s, s], already scaled.
  at::Tensor relative_scores(const at::Tensor& q, const at::Tensor& k, const at::Tensor& relative_pos,
                             const at::Tensor& rel_embeddings, double scale);
  DebertaV2Config c_;
};

class DebertaV2Attention : public Module {
 public:
  explicit DebertaV2Attention(const DebertaV2Config& c);
  std::string type_name() const override { return "DebertaV2Attention"; }
  at::Tensor forward(const at::Tensor& h, const at::Tensor& mask, const at::Tensor& relative_pos,
                     const at::Tensor& rel_embeddings);
  std::shared_ptr<DisentangledSelfAttention> self;
  std::shared_ptr<BertDenseNorm> output;
};

class DebertaV2Intermediate : public Module {
 public:
  explicit DebertaV2Intermediate(const DebertaV2Config& c);
  std::string type_name() const override { return "DebertaV2Intermediate"; }
  at::Tensor forward(const at::Tensor& x);
  std::shared_ptr<Linear> dense;

 private:
  std::string act_;
};

class DebertaV2Layer : public Module {
 public:
  explicit DebertaV2Layer(const DebertaV2Config& c);
  std::string type_name() const override { return "DebertaV2Layer"; }
  at::Tensor forward(const at::Tensor& h, const at::Tensor& mask, const at::Tensor& relative_pos,
                     const at::Tensor& rel_embeddings);
  std::shared_ptr<DebertaV2Attention> attention;
  std::shared_ptr<DebertaV2Intermediate> intermediate;
  std::shared_ptr<BertDenseNorm> output;
};

class DebertaV2Conv1d : public Module {
 public:
  DebertaV2Conv1d(int64_t channels, int64_t kernel, int64_t groups);
  std::string type_name() const override { return "Conv1d"; }
  at::Tensor forward(const at::Tensor& x) const;  // [b, s, channels] -> [b, s, channels]
  at::Tensor weight, bias;

 private:
  int64_t kernel_, groups_;
};

// Added to the first layer's output: LayerNorm(layer_out + act(conv(embeddings))), on real tokens.
class DebertaV2ConvLayer : public Module {
 public:
  explicit DebertaV2ConvLayer(const DebertaV2Config& c);
  std::string type_name() const override { return "ConvLayer"; }
  at::Tensor forward(const at::Tensor& embeddings, const at::Tensor& layer_out, const at::Tensor& real);
  std::shared_ptr<DebertaV2Conv1d> conv;
  std::shared_ptr<LayerNorm> LayerNorm_;

 private:
  std::string act_;
};

class DebertaV2Encoder : public Module {
 public:
  explicit DebertaV2Encoder(const DebertaV2Config& c);
  std::string type_name() const override { return "DebertaV2Encoder"; }
  // The relative embeddings the layers use (LayerNorm'd with norm_rel_ebd "layer_norm"),
  // undefined without relative attention.
  at::Tensor relative_embeddings();
  std::shared_ptr<ModuleList<DebertaV2Layer>> layer;
  std::shared_ptr<Embedding> rel_embeddings;  // optional
  std::shared_ptr<LayerNorm> LayerNorm_;      // optional
  std::shared_ptr<DebertaV2ConvLayer> conv;   // optional
};

// What the classifiers need of a DeBERTa body (DebertaModel, DebertaV2Model).
class DebertaBody : public Model {
 public:
  using Model::Model;
  TaskKind task() const override { return TaskKind::kEncoder; }
  std::string base_model_prefix() const override { return "deberta"; }
  virtual const DebertaV2Config& deberta_config() const = 0;
};

class DebertaV2Model : public DebertaBody {
 public:
  DebertaV2Model(const nlohmann::json& j, const std::string& where);
  std::string type_name() const override { return "DebertaV2Model"; }
  ModelOutputs run(const ModelInputs& in) override;
  Embedding* input_embeddings() override { return embeddings->word_embeddings.get(); }
  // Relative positions only (DeBERTa-v3): any length, as in transformers.
  int64_t max_positions() const override { return cfg_.position_biased_input ? cfg_.max_position_embeddings : 0; }
  const DebertaV2Config& deberta_config() const override { return cfg_; }
  std::shared_ptr<DebertaV2Embeddings> embeddings;
  std::shared_ptr<DebertaV2Encoder> encoder;

 private:
  DebertaV2Config cfg_;
};

// transformers' ContextPooler: pooler_hidden_act(dense(h[:, 0])).
class DebertaV2ContextPooler : public Module {
 public:
  explicit DebertaV2ContextPooler(const DebertaV2Config& c);
  std::string type_name() const override { return "ContextPooler"; }
  at::Tensor forward(const at::Tensor& h);
  std::shared_ptr<Linear> dense;

 private:
  std::string act_;
};

// {Deberta,DebertaV2}ForSequenceClassification (pooler, then classifier) and
// {Deberta,DebertaV2}ForTokenClassification (classifier on every token) over `body`.
class DebertaForClassification : public Model {
 public:
  // `family`: "Deberta" or "DebertaV2", the class names' stem.
  DebertaForClassification(const nlohmann::json& j, const std::string& where, std::shared_ptr<DebertaBody> body,
                           std::string family, bool per_token);
  std::string type_name() const override {
    return family_ + (per_token_ ? "ForTokenClassification" : "ForSequenceClassification");
  }
  TaskKind task() const override {
    return per_token_ ? TaskKind::kTokenClassification : TaskKind::kSequenceClassification;
  }
  ModelOutputs run(const ModelInputs& in) override;
  std::string base_model_prefix() const override { return "deberta"; }
  std::vector<std::string> head_parameter_names() const override;
  Embedding* input_embeddings() override { return deberta->input_embeddings(); }
  int64_t max_positions() const override { return deberta->max_positions(); }
  std::shared_ptr<DebertaBody> deberta;
  std::shared_ptr<DebertaV2ContextPooler> pooler;  // sequence classification only
  std::shared_ptr<Linear> classifier;

 private:
  std::string family_;
  bool per_token_;
};

}  // namespace peft
