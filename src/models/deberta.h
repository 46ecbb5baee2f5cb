// DeBERTa (v1: DebertaModel, DebertaForSequenceClassification, DebertaForTokenClassification)
// with transformers' names. The embeddings, pooler and head are DeBERTa-v2's; the attention
// differs: one fused in_proj (q, k, v interleaved per head) with separate q_bias / v_bias,
// queries scaled before the product, relative embeddings narrowed to the sequence
// (pos_proj for c2p, pos_q_proj for p2c), and optional talking heads.
#pragma once

#include "models/deberta_v2.h"

namespace peft {

class DebertaSelfAttention : public Module {
 public:
  explicit DebertaSelfAttention(const DebertaV2Config& c);
  std::string type_name() const override { return "DisentangledSelfAttention"; }
  // h [b, s, hidden], mask [b, 1, s, s] (true = may attend), relative_pos [s, s] and
  // rel_embeddings [2 * max_relative_positions, hidden] (undefined without relative attention).
  at::Tensor forward(const at::Tensor& h, const at::Tensor& mask, const at::Tensor& relative_pos,
                     const at::Tensor& rel_embeddings);
  std::shared_ptr<Linear> in_proj, pos_proj, pos_q_proj;   // the last two for c2p / p2c
  std::shared_ptr<Linear> head_logits_proj, head_weights_proj;  // talking_head
  at::Tensor q_bias, v_bias;

 private:
  at::Tensor relative_scores(const at::Tensor& q, const at::Tensor& k, const at::Tensor& relative_pos,
                             const at::Tensor& rel_embeddings, double scale);
  DebertaV2Config c_;
};

class DebertaAttention : public Module {
 public:
  explicit DebertaAttention(const DebertaV2Config& c);
  std::string type_name() const override { return "DebertaAttention"; }
  std::shared_ptr<DebertaSelfAttention> self;
  std::shared_ptr<BertDenseNorm> output;
};

class DebertaLayer : public Module {
 public:
  explicit DebertaLayer(const DebertaV2Config& c);
  std::string type_name() const override { return "DebertaLayer"; }
  at::Tensor forward(const at::Tensor& h, const at::Tensor& mask, const at::Tensor& relative_pos,
                     const at::Tensor& rel_embeddings);
  std::shared_ptr<DebertaAttention> attention;
  std::shared_ptr<DebertaV2Intermediate> intermediate;
  std::shared_ptr<BertDenseNorm> output;
};

class DebertaEncoder : public Module {
 public:
  explicit DebertaEncoder(const DebertaV2Config& c);
  std::string type_name() const override { return "DebertaEncoder"; }
  std::shared_ptr<ModuleList<DebertaLayer>> layer;
  std::shared_ptr<Embedding> rel_embeddings;  // optional
};

class DebertaModel : public DebertaBody {
 public:
  DebertaModel(const nlohmann::json& j, const std::string& where);
  std::string type_name() const override { return "DebertaModel"; }
  ModelOutputs run(const ModelInputs& in) override;
  Embedding* input_embeddings() override { return embeddings->word_embeddings.get(); }
  int64_t max_positions() const override { return cfg_.position_biased_input ? cfg_.max_position_embeddings : 0; }
  const DebertaV2Config& deberta_config() const override { return cfg_; }
  std::shared_ptr<DebertaV2Embeddings> embeddings;
  std::shared_ptr<DebertaEncoder> encoder;

 private:
  DebertaV2Config cfg_;
};

// DeBERTa's classifiers: version 1 (DebertaModel) or 2 (DebertaV2Model) underneath.
std::shared_ptr<Model> make_deberta_classifier(const nlohmann::json& j, const std::string& where, int version,
                                               bool per_token);

}  // namespace peft
