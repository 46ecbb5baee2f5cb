// DistilBERT (DistilBertModel, DistilBertForSequenceClassification): BERT's post-LayerNorm
// encoder under its own names (q_lin/k_lin/v_lin/out_lin, sa_layer_norm, ffn.lin1/lin2,
// output_layer_norm), learned positions, no token types; the classifier reads the first
// token through pre_classifier + ReLU.
#pragma once

#include "peft/layers.h"
#include "peft/model.h"

namespace peft {

struct DistilBertConfig {
  int64_t vocab_size, max_position_embeddings, n_layers, n_heads, dim, hidden_dim;
  std::string activation;
  static DistilBertConfig from_json(const nlohmann::json& j, const std::string& where);
};

class DistilBertEmbeddings : public Module {
 public:
  explicit DistilBertEmbeddings(const DistilBertConfig& c);
  std::string type_name() const override { return "Embeddings"; }
  at::Tensor forward(const at::Tensor& ids, const at::Tensor& positions, const at::Tensor& inputs_embeds);
  std::shared_ptr<Embedding> word_embeddings, position_embeddings;
  std::shared_ptr<LayerNorm> LayerNorm_;  // "LayerNorm"
};

class DistilBertSelfAttention : public Module {
 public:
  explicit DistilBertSelfAttention(const DistilBertConfig& c);
  std::string type_name() const override { return "DistilBertSelfAttention"; }
  at::Tensor forward(const at::Tensor& h, const at::Tensor& mask);
  std::shared_ptr<Linear> q_lin, k_lin, v_lin, out_lin;

 private:
  int64_t heads_, head_dim_;
};

class DistilBertFFN : public AdaptableLayer {  // adaptable: parallel adapters sit beside it
 public:
  explicit DistilBertFFN(const DistilBertConfig& c);
  std::string type_name() const override { return "FFN"; }
  LayerKind kind() const override { return LayerKind::kBlock; }
  at::Tensor base_forward(const at::Tensor& x) override;
  int64_t input_dim() const override { return lin1->in_features; }
  int64_t output_dim() const override { return lin2->out_features; }
  std::shared_ptr<Linear> lin1, lin2;

 private:
  std::string act_;
};

class DistilBertBlock : public Module {
 public:
  explicit DistilBertBlock(const DistilBertConfig& c);
  std::string type_name() const override { return "TransformerBlock"; }
  at::Tensor forward(const at::Tensor& h, const at::Tensor& mask);
  std::shared_ptr<DistilBertSelfAttention> attention;
  std::shared_ptr<LayerNorm> sa_layer_norm, output_layer_norm;
  std::shared_ptr<DistilBertFFN> ffn;
};

class DistilBertTransformer : public Module {
 public:
  explicit DistilBertTransformer(const DistilBertConfig& c);
  std::string type_name() const override { return "Transformer"; }
  std::shared_ptr<ModuleList<DistilBertBlock>> layer;
};

class DistilBertModel : public Model {
 public:
  DistilBertModel(const nlohmann::json& j, const std::string& where);
  std::string type_name() const override { return "DistilBertModel"; }
  TaskKind task() const override { return TaskKind::kEncoder; }
  ModelOutputs run(const ModelInputs& in) override;
  std::string base_model_prefix() const override { return "distilbert"; }
  Embedding* input_embeddings() override { return embeddings->word_embeddings.get(); }
  int64_t max_positions() const override { return cfg_.max_position_embeddings; }
  std::shared_ptr<DistilBertEmbeddings> embeddings;
  std::shared_ptr<DistilBertTransformer> transformer;

 private:
  DistilBertConfig cfg_;
};

class DistilBertForSequenceClassification : public Model {
 public:
  DistilBertForSequenceClassification(const nlohmann::json& j, const std::string& where);
  std::string type_name() const override { return "DistilBertForSequenceClassification"; }
  TaskKind task() const override { return TaskKind::kSequenceClassification; }
  ModelOutputs run(const ModelInputs& in) override;
  std::string base_model_prefix() const override { return "distilbert"; }
  std::vector<std::string> head_parameter_names() const override {
    return {"pre_classifier.weight", "pre_classifier.bias", "classifier.weight", "classifier.bias"};
  }
  Embedding* input_embeddings() override { return distilbert->input_embeddings(); }
  int64_t max_positions() const override { return distilbert->max_positions(); }
  std::shared_ptr<DistilBertModel> distilbert;
  std::shared_ptr<Linear> pre_classifier, classifier;
};

}  // namespace peft
