// BERT, RoBERTa, XLM-RoBERTa and ELECTRA: BertModel, BertForSequenceClassification, RobertaModel,
// RobertaForSequenceClassification, their XLMRoberta* twins and the Electra* discriminator
// classes with transformers' names.
#pragma once

#include "models/model_config.h"

#include "models/attention.h"
#include "peft/layers.h"
#include "peft/model.h"

namespace peft {


// Throws unless token_type_ids `t` is [b, s] with every id in [0, type_vocab_size).
void check_token_type_ids(const at::Tensor& t, int64_t b, int64_t s, int64_t type_vocab_size);

class BertEmbeddings : public Module {
 public:
  explicit BertEmbeddings(const BertConfig& c);
  std::string type_name() const override { return "BertEmbeddings"; }
  at::Tensor forward(const at::Tensor& ids, const at::Tensor& token_type_ids, const at::Tensor& position_ids,
                     const at::Tensor& inputs_embeds = {});
  std::shared_ptr<Embedding> word_embeddings, position_embeddings, token_type_embeddings;
  std::shared_ptr<LayerNorm> LayerNorm_;
};

class BertSelfAttention : public Module {
 public:
  explicit BertSelfAttention(const BertConfig& c);
  std::string type_name() const override { return "BertSelfAttention"; }
  // `prefix`: keys/values put before this layer's own (prefix tuning), or nullptr.
  at::Tensor forward(const at::Tensor& h, const at::Tensor& mask, const KVCache* prefix = nullptr, size_t layer = 0);
  std::shared_ptr<Linear> query, key, value;

 private:
  int64_t heads_, head_dim_;
};

// dense, then LayerNorm(dense(x) + residual): BertSelfOutput and BertOutput.
class BertDenseNorm : public Module {
 public:
  BertDenseNorm(std::string type, int64_t in, int64_t out, double eps);
  std::string type_name() const override { return type_; }
  at::Tensor forward(const at::Tensor& x, const at::Tensor& residual);
  std::shared_ptr<Linear> dense;
  std::shared_ptr<LayerNorm> LayerNorm_;

 private:
  std::string type_;
};

class BertAttention : public Module {
 public:
  explicit BertAttention(const BertConfig& c);
  std::string type_name() const override { return "BertAttention"; }
  // `prefix`: keys/values put before this layer's own (prefix tuning), or nullptr.
  at::Tensor forward(const at::Tensor& h, const at::Tensor& mask, const KVCache* prefix = nullptr, size_t layer = 0);
  std::shared_ptr<BertSelfAttention> self;
  std::shared_ptr<BertDenseNorm> output;
};

class BertIntermediate : public Module {
 public:
  explicit BertIntermediate(const BertConfig& c);
  std::string type_name() const override { return "BertIntermediate"; }
  at::Tensor forward(const at::Tensor& x);
  std::shared_ptr<Linear> dense;

 private:
  std::string act_;
};

class BertLayer : public Module {
 public:
  explicit BertLayer(const BertConfig& c);
  std::string type_name() const override { return "BertLayer"; }
  // `prefix`: keys/values put before this layer's own (prefix tuning), or nullptr.
  at::Tensor forward(const at::Tensor& h, const at::Tensor& mask, const KVCache* prefix = nullptr, size_t layer = 0);
  std::shared_ptr<BertAttention> attention;
  std::shared_ptr<BertIntermediate> intermediate;
  std::shared_ptr<BertDenseNorm> output;
};

class BertEncoder : public Module {
 public:
  explicit BertEncoder(const BertConfig& c);
  std::string type_name() const override { return "BertEncoder"; }
  std::shared_ptr<ModuleList<BertLayer>> layer;
};

class BertPooler : public Module {
 public:
  explicit BertPooler(int64_t hidden);
  std::string type_name() const override { return "BertPooler"; }
  at::Tensor forward(const at::Tensor& h);  // tanh(dense(h[:, 0]))
  std::shared_ptr<Linear> dense;
};

class BertModel : public Model {
 public:
  // `embedding_size` > 0 and != hidden_size: the embeddings are that wide and
  // `embeddings_project` maps them to the hidden size (ELECTRA).
  BertModel(const nlohmann::json& j, const std::string& where, bool add_pooling_layer = true,
            int64_t embedding_size = 0);
  std::string type_name() const override { return "BertModel"; }
  TaskKind task() const override { return TaskKind::kEncoder; }
  ModelOutputs run(const ModelInputs& in) override;
  std::string base_model_prefix() const override { return "bert"; }
  Embedding* input_embeddings() override { return embeddings->word_embeddings.get(); }
  // Layers that take key/value prefixes from a cache (prefix tuning); BERT never appends.
  int64_t num_cache_layers() const override { return cfg_.num_layers; }
  int64_t hidden_size() const { return cfg_.hidden_size; }
  // RoBERTa's positions start after pad_token_id.
  int64_t max_positions() const override {
    return cfg_.max_position_embeddings - (cfg_.padding_aware_positions ? cfg_.pad_token_id + 1 : 0);
  }
  std::shared_ptr<BertEmbeddings> embeddings;
  std::shared_ptr<Linear> embeddings_project;  // ELECTRA's, when its embeddings are narrower
  std::shared_ptr<BertEncoder> encoder;
  std::shared_ptr<BertPooler> pooler;

 private:
  // position_ids when the caller gives none: 0.. after the prefix, or RoBERTa's.
  at::Tensor default_positions(const ModelInputs& in, int64_t past, const at::TensorOptions& opts) const;
  BertConfig cfg_;
};

// RoBERTa is BERT's architecture with positions counted over real tokens only (from
// pad_token_id + 1) and its own prefix; model_type "roberta" selects the positions.
class RobertaModel : public BertModel {
 public:
  using BertModel::BertModel;
  std::string type_name() const override { return "RobertaModel"; }
  std::string base_model_prefix() const override { return "roberta"; }
};

// XLM-RoBERTa: RoBERTa's architecture and names under its own class names (model_type
// "xlm-roberta" selects RoBERTa's positions).
class XLMRobertaModel : public RobertaModel {
 public:
  using RobertaModel::RobertaModel;
  std::string type_name() const override { return "XLMRobertaModel"; }
};

// ELECTRA's discriminator body: BERT's encoder without pooler, under "electra", with
// embeddings embedding_size wide projected to the hidden size when the two differ.
class ElectraModel : public BertModel {
 public:
  ElectraModel(const nlohmann::json& j, const std::string& where);
  std::string type_name() const override { return "ElectraModel"; }
  std::string base_model_prefix() const override { return "electra"; }
};

// dense + activation + out_proj over the first token (<s>): RoBERTa's (tanh) and
// ELECTRA's (exact GELU) classification heads.
class RobertaClassificationHead : public Module {
 public:
  RobertaClassificationHead(int64_t hidden, int64_t labels, std::string type = "RobertaClassificationHead",
                            std::string activation = "tanh");
  std::string type_name() const override { return type_; }
  at::Tensor forward(const at::Tensor& h);
  std::shared_ptr<Linear> dense, out_proj;

 private:
  std::string type_, act_;
};

class RobertaForSequenceClassification : public Model {
 public:
  RobertaForSequenceClassification(const nlohmann::json& j, const std::string& where);
  std::string type_name() const override { return "RobertaForSequenceClassification"; }
  TaskKind task() const override { return TaskKind::kSequenceClassification; }
  ModelOutputs run(const ModelInputs& in) override;
  std::string base_model_prefix() const override { return "roberta"; }
  std::vector<std::string> head_parameter_names() const override {
    return {"classifier.dense.weight", "classifier.dense.bias", "classifier.out_proj.weight", "classifier.out_proj.bias"};
  }
  Embedding* input_embeddings() override { return roberta->input_embeddings(); }
  int64_t num_cache_layers() const override { return roberta->num_cache_layers(); }
  int64_t max_positions() const override { return roberta->max_positions(); }
  std::shared_ptr<RobertaModel> roberta;
  std::shared_ptr<RobertaClassificationHead> classifier;
};

class XLMRobertaForSequenceClassification : public RobertaForSequenceClassification {
 public:
  using RobertaForSequenceClassification::RobertaForSequenceClassification;
  std::string type_name() const override { return "XLMRobertaForSequenceClassification"; }
};

class ElectraForSequenceClassification : public Model {
 public:
  ElectraForSequenceClassification(const nlohmann::json& j, const std::string& where);
  std::string type_name() const override { return "ElectraForSequenceClassification"; }
  TaskKind task() const override { return TaskKind::kSequenceClassification; }
  ModelOutputs run(const ModelInputs& in) override;
  std::string base_model_prefix() const override { return "electra"; }
  std::vector<std::string> head_parameter_names() const override {
    return {"classifier.dense.weight", "classifier.dense.bias", "classifier.out_proj.weight", "classifier.out_proj.bias"};
  }
  Embedding* input_embeddings() override { return electra->input_embeddings(); }
  int64_t num_cache_layers() const override { return electra->num_cache_layers(); }
  int64_t max_positions() const override { return electra->max_positions(); }
  std::shared_ptr<ElectraModel> electra;
  std::shared_ptr<RobertaClassificationHead> classifier;
};

class BertForSequenceClassification : public Model {
 public:
  BertForSequenceClassification(const nlohmann::json& j, const std::string& where);
  std::string type_name() const override { return "BertForSequenceClassification"; }
  TaskKind task() const override { return TaskKind::kSequenceClassification; }
  ModelOutputs run(const ModelInputs& in) override;
  std::string base_model_prefix() const override { return "bert"; }
  std::vector<std::string> head_parameter_names() const override { return {"classifier.weight", "classifier.bias"}; }
  Embedding* input_embeddings() override { return bert->input_embeddings(); }
  int64_t num_cache_layers() const override { return bert->num_cache_layers(); }
  int64_t max_positions() const override { return bert->max_positions(); }
  std::shared_ptr<BertModel> bert;
  std::shared_ptr<Linear> classifier;
};

// BertForTokenClassification, RobertaForTokenClassification and ElectraForTokenClassification: `classifier` over every
// token's last hidden state (the encoder without pooler). transformers' dropout before
// it is not applied, as nowhere in our encoders (training here runs without dropout).
class BertForTokenClassification : public Model {
 public:
  // family "Bert", "Roberta" or "Electra": the encoder class, its prefix and the type name.
  BertForTokenClassification(const nlohmann::json& j, const std::string& family, const std::string& where);
  std::string type_name() const override { return family_ + "ForTokenClassification"; }
  TaskKind task() const override { return TaskKind::kTokenClassification; }
  ModelOutputs run(const ModelInputs& in) override;
  std::string base_model_prefix() const override { return encoder->base_model_prefix(); }
  std::vector<std::string> head_parameter_names() const override { return {"classifier.weight", "classifier.bias"}; }
  Embedding* input_embeddings() override { return encoder->input_embeddings(); }
  int64_t num_cache_layers() const override { return encoder->num_cache_layers(); }
  int64_t max_positions() const override { return encoder->max_positions(); }
  std::shared_ptr<BertModel> encoder;  // registered as "bert", "roberta" or "electra"
  std::shared_ptr<Linear> classifier;

 private:
  std::string family_;
};


}  // namespace peft
