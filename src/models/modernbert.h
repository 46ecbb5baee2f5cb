// ModernBERT (ModernBertModel, ModernBertForSequenceClassification,
// ModernBertForTokenClassification) with transformers' names: a pre-norm encoder with
// rotary positions, a fused Wqkv projection, a gated MLP (act(input) * gate from one Wi),
// LayerNorms without bias by default, and layers that alternate between global attention
// and a local window of local_attention / 2 tokens each side, each kind with its own
// rotary base.
#pragma once

#include "models/attention.h"
#include "peft/layers.h"
#include "peft/model.h"

namespace peft {

struct ModernBertConfig {
  int64_t vocab_size, hidden_size, intermediate_size, num_layers, num_heads, head_dim, max_position_embeddings;
  double norm_eps;
  bool norm_bias, attention_bias, mlp_bias, classifier_bias;
  std::string hidden_activation, classifier_activation;
  bool mean_pooling;            // classifier_pooling "mean" (else "cls": the first token)
  int64_t window;               // a local layer's query sees keys at most this far either side
  std::vector<bool> local;      // per layer: sliding_attention
  nlohmann::json rope_global, rope_local;
  static ModernBertConfig from_json(const nlohmann::json& j, const std::string& where);
};

class ModernBertEmbeddings : public Module {
 public:
  explicit ModernBertEmbeddings(const ModernBertConfig& c);
  std::string type_name() const override { return "ModernBertEmbeddings"; }
  at::Tensor forward(const at::Tensor& ids, const at::Tensor& inputs_embeds);  // norm(tok_embeddings(ids))
  std::shared_ptr<Embedding> tok_embeddings;
  std::shared_ptr<LayerNorm> norm;
};

class ModernBertAttention : public Module {
 public:
  explicit ModernBertAttention(const ModernBertConfig& c);
  std::string type_name() const override { return "ModernBertAttention"; }
  // mask [b, 1, s, s], true = may attend.
  at::Tensor forward(const at::Tensor& h, const RotaryEmbedding::Angles& rope, const at::Tensor& mask);
  std::shared_ptr<Linear> Wqkv, Wo;

 private:
  int64_t heads_, head_dim_;
};

class ModernBertMLP : public Module {
 public:
  explicit ModernBertMLP(const ModernBertConfig& c);
  std::string type_name() const override { return "ModernBertMLP"; }
  at::Tensor forward(const at::Tensor& x);  // Wo(act(input) * gate), [input, gate] = Wi(x)
  std::shared_ptr<Linear> Wi, Wo;

 private:
  std::string act_;
};

class ModernBertEncoderLayer : public Module {
 public:
  ModernBertEncoderLayer(const ModernBertConfig& c, int64_t index);
  std::string type_name() const override { return "ModernBertEncoderLayer"; }
  at::Tensor forward(const at::Tensor& h, const RotaryEmbedding::Angles& rope, const at::Tensor& mask);
  bool local() const { return local_; }
  std::shared_ptr<LayerNorm> attn_norm;  // none on the first layer (the embeddings are normed)
  std::shared_ptr<ModernBertAttention> attn;
  std::shared_ptr<LayerNorm> mlp_norm;
  std::shared_ptr<ModernBertMLP> mlp;

 private:
  bool local_;
};

class ModernBertModel : public Model {
 public:
  ModernBertModel(const nlohmann::json& j, const std::string& where);
  std::string type_name() const override { return "ModernBertModel"; }
  TaskKind task() const override { return TaskKind::kEncoder; }
  ModelOutputs run(const ModelInputs& in) override;
  std::string base_model_prefix() const override { return "model"; }
  Embedding* input_embeddings() override { return embeddings->tok_embeddings.get(); }
  const ModernBertConfig& modernbert_config() const { return cfg_; }
  std::shared_ptr<ModernBertEmbeddings> embeddings;
  std::shared_ptr<ModuleList<ModernBertEncoderLayer>> layers;
  std::shared_ptr<LayerNorm> final_norm;

 private:
  ModernBertConfig cfg_;
  RotaryEmbedding rope_global_, rope_local_;
};

// norm(act(dense(x))): what both classifiers apply before `classifier`.
class ModernBertPredictionHead : public Module {
 public:
  explicit ModernBertPredictionHead(const ModernBertConfig& c);
  std::string type_name() const override { return "ModernBertPredictionHead"; }
  at::Tensor forward(const at::Tensor& x);
  std::shared_ptr<Linear> dense;
  std::shared_ptr<LayerNorm> norm;

 private:
  std::string act_;
};

// ModernBertForSequenceClassification (the first token's, or the real tokens' mean, state
// through head and classifier) and ModernBertForTokenClassification (every token's).
class ModernBertForClassification : public Model {
 public:
  ModernBertForClassification(const nlohmann::json& j, const std::string& where, bool per_token);
  std::string type_name() const override {
    return per_token_ ? "ModernBertForTokenClassification" : "ModernBertForSequenceClassification";
  }
  TaskKind task() const override {
    return per_token_ ? TaskKind::kTokenClassification : TaskKind::kSequenceClassification;
  }
  ModelOutputs run(const ModelInputs& in) override;
  std::string base_model_prefix() const override { return "model"; }
  std::vector<std::string> head_parameter_names() const override;
  Embedding* input_embeddings() override { return model->input_embeddings(); }
  std::shared_ptr<ModernBertModel> model;
  std::shared_ptr<ModernBertPredictionHead> head;
  std::shared_ptr<Linear> classifier;

 private:
  bool per_token_;
};

}  // namespace peft
