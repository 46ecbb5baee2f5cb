// ViT: ViTModel and ViTForImageClassification with transformers' (v5) module names:
// layers.N.attention.{q,k,v,o}_proj, layers.N.mlp.{fc1,fc2}. Checkpoints with the older
// names (encoder.layer.N.attention.attention.query, ...) are renamed on load.
#pragma once

#include "models/model_config.h"

#include "models/attention.h"
#include "peft/layers.h"
#include "peft/model.h"

namespace peft {


class ViTPatchEmbeddings : public Module {
 public:
  explicit ViTPatchEmbeddings(const ViTConfig& c);
  std::string type_name() const override { return "ViTPatchEmbeddings"; }
  std::shared_ptr<Conv2d> projection;
};

class ViTEmbeddings : public Module {
 public:
  explicit ViTEmbeddings(const ViTConfig& c);
  std::string type_name() const override { return "ViTEmbeddings"; }
  at::Tensor forward(const at::Tensor& pixels);  // [b, 1 + patches, hidden]
  at::Tensor cls_token, position_embeddings;
  std::shared_ptr<ViTPatchEmbeddings> patch_embeddings;

 private:
  int64_t image_size_, num_channels_;
};

class ViTAttention : public Module {
 public:
  explicit ViTAttention(const ViTConfig& c);
  std::string type_name() const override { return "ViTAttention"; }
  at::Tensor forward(const at::Tensor& h);
  std::shared_ptr<Linear> q_proj, k_proj, v_proj, o_proj;

 private:
  int64_t heads_, head_dim_;
};

class ViTMLP : public AdaptableLayer {  // adaptable: parallel adapters sit beside it
 public:
  explicit ViTMLP(const ViTConfig& c);
  std::string type_name() const override { return "ViTMLP"; }
  LayerKind kind() const override { return LayerKind::kBlock; }
  at::Tensor base_forward(const at::Tensor& x) override;
  int64_t input_dim() const override { return fc1->in_features; }
  int64_t output_dim() const override { return fc2->out_features; }
  std::shared_ptr<Linear> fc1, fc2;

 private:
  std::string act_;
};

class ViTLayer : public Module {
 public:
  explicit ViTLayer(const ViTConfig& c);
  std::string type_name() const override { return "ViTLayer"; }
  at::Tensor forward(const at::Tensor& h);
  std::shared_ptr<ViTAttention> attention;
  std::shared_ptr<LayerNorm> layernorm_before, layernorm_after;
  std::shared_ptr<ViTMLP> mlp;
};

class ViTPooler : public Module {
 public:
  explicit ViTPooler(const ViTConfig& c);
  std::string type_name() const override { return "ViTPooler"; }
  at::Tensor forward(const at::Tensor& h);
  std::shared_ptr<Linear> dense;

 private:
  std::string act_;
};

// Renames a ViT checkpoint key from transformers' v4 layout to the v5 module names;
// returns the key unchanged when it already has them.
std::string vit_rename_legacy_key(const std::string& key);
// The reverse: the v4 key transformers writes for a v5 module name.
std::string vit_legacy_key(const std::string& name);

class ViTModel : public Model {
 public:
  ViTModel(const nlohmann::json& j, const std::string& where, bool add_pooling_layer = true);
  std::string type_name() const override { return "ViTModel"; }
  InputKind input_kind() const override { return InputKind::kPixels; }
  std::string name_for_checkpoint_key(const std::string& key) const override { return vit_rename_legacy_key(key); }
  std::string checkpoint_key_for_name(const std::string& name) const override { return vit_legacy_key(name); }
  TaskKind task() const override { return TaskKind::kEncoder; }
  ModelOutputs run(const ModelInputs& in) override;
  std::string base_model_prefix() const override { return "vit"; }
  std::shared_ptr<ViTEmbeddings> embeddings;
  std::shared_ptr<ModuleList<ViTLayer>> layers;
  std::shared_ptr<LayerNorm> layernorm;
  std::shared_ptr<ViTPooler> pooler;

 private:
  ViTConfig cfg_;
};

class ViTForImageClassification : public Model {
 public:
  ViTForImageClassification(const nlohmann::json& j, const std::string& where);
  std::string type_name() const override { return "ViTForImageClassification"; }
  InputKind input_kind() const override { return InputKind::kPixels; }
  std::string name_for_checkpoint_key(const std::string& key) const override { return vit_rename_legacy_key(key); }
  std::string checkpoint_key_for_name(const std::string& name) const override { return vit_legacy_key(name); }
  TaskKind task() const override { return TaskKind::kImageClassification; }
  ModelOutputs run(const ModelInputs& in) override;
  std::string base_model_prefix() const override { return "vit"; }
  std::vector<std::string> head_parameter_names() const override { return {"classifier.weight", "classifier.bias"}; }
  std::shared_ptr<ViTModel> vit;
  std::shared_ptr<Linear> classifier;
};


}  // namespace peft
