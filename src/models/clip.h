// CLIP: CLIPModel (text and vision towers, visual_projection / text_projection,
// logit_scale), CLIPTextModelWithProjection and CLIPVisionModelWithProjection, module for
// module as transformers 5's modeling_clip.py with its parameter names
// (text_model.encoder.layers.N.self_attn.q_proj, vision_model.pre_layrnorm, ...).
#pragma once

#include <functional>

#include "models/clip_config.h"
#include "peft/clip.h"
#include "peft/layers.h"
#include "peft/model.h"

namespace peft {

class ClipAttention : public Module {
 public:
  explicit ClipAttention(const ClipEncoderConfig& c);
  std::string type_name() const override { return "CLIPAttention"; }
  at::Tensor forward(const at::Tensor& h, const at::Tensor& mask, bool causal);
  std::shared_ptr<Linear> k_proj, v_proj, q_proj, out_proj;

 private:
  int64_t heads_, head_dim_;
};

class ClipMLP : public AdaptableLayer {  // adaptable: parallel adapters sit beside it
 public:
  explicit ClipMLP(const ClipEncoderConfig& c);
  std::string type_name() const override { return "CLIPMLP"; }
  LayerKind kind() const override { return LayerKind::kBlock; }
  at::Tensor base_forward(const at::Tensor& x) override;
  int64_t input_dim() const override { return fc1->in_features; }
  int64_t output_dim() const override { return fc2->out_features; }
  std::shared_ptr<Linear> fc1, fc2;

 private:
  std::string act_;
};

class ClipEncoderLayer : public Module {
 public:
  explicit ClipEncoderLayer(const ClipEncoderConfig& c);
  std::string type_name() const override { return "CLIPEncoderLayer"; }
  at::Tensor forward(const at::Tensor& h, const at::Tensor& mask, bool causal);
  std::shared_ptr<ClipAttention> self_attn;
  std::shared_ptr<LayerNorm> layer_norm1;
  std::shared_ptr<ClipMLP> mlp;
  std::shared_ptr<LayerNorm> layer_norm2;
};

class ClipEncoder : public Module {
 public:
  explicit ClipEncoder(const ClipEncoderConfig& c);
  std::string type_name() const override { return "CLIPEncoder"; }
  // mask: [b, 1, q, k] boolean (undefined: none); causal without a mask: plain causal.
  // before_layer (ModelInputs'; visual prompts): rewrites the hidden states entering each layer.
  at::Tensor forward(at::Tensor h, const at::Tensor& mask, bool causal, bool checkpoint_layers,
                     const std::function<at::Tensor(size_t, const at::Tensor&)>& before_layer = nullptr);
  std::shared_ptr<ModuleList<ClipEncoderLayer>> layers;
};

class ClipTextEmbeddings : public Module {
 public:
  explicit ClipTextEmbeddings(const ClipTextConfig& c);
  std::string type_name() const override { return "CLIPTextEmbeddings"; }
  at::Tensor forward(const at::Tensor& ids, const at::Tensor& position_ids);
  std::shared_ptr<Embedding> token_embedding, position_embedding;
};

// The patch embedding: a Conv2d without bias, kernel = stride = patch size.
class ClipPatchEmbedding : public Module {
 public:
  ClipPatchEmbedding(int64_t channels, int64_t hidden, int64_t patch);
  std::string type_name() const override { return "Conv2d"; }
  at::Tensor forward(const at::Tensor& x) const;
  at::Tensor weight;

 private:
  int64_t patch_;
};

class ClipVisionEmbeddings : public Module {
 public:
  explicit ClipVisionEmbeddings(const ClipVisionConfig& c);
  std::string type_name() const override { return "CLIPVisionEmbeddings"; }
  at::Tensor forward(const at::Tensor& pixels);  // [b, 1 + patches, hidden]
  at::Tensor class_embedding;
  std::shared_ptr<ClipPatchEmbedding> patch_embedding;
  std::shared_ptr<Embedding> position_embedding;
};

// transformers' CLIPTextModel: causal attention (and padding), final_layer_norm, pooled
// at the end-of-text token.
class ClipTextTower : public Module {
 public:
  explicit ClipTextTower(const ClipTextConfig& c);
  std::string type_name() const override { return "CLIPTextModel"; }
  ModelOutputs forward(const ModelInputs& in);  // last_hidden_state, pooler_output
  std::shared_ptr<ClipTextEmbeddings> embeddings;
  std::shared_ptr<ClipEncoder> encoder;
  std::shared_ptr<LayerNorm> final_layer_norm;

 private:
  ClipTextConfig cfg_;
};

// transformers' CLIPVisionModel: pre_layrnorm (sic), encoder, post_layernorm over the
// class token.
class ClipVisionTower : public Module {
 public:
  explicit ClipVisionTower(const ClipVisionConfig& c);
  std::string type_name() const override { return "CLIPVisionModel"; }
  ModelOutputs forward(const ModelInputs& in);
  std::shared_ptr<ClipVisionEmbeddings> embeddings;
  std::shared_ptr<LayerNorm> pre_layrnorm;
  std::shared_ptr<ClipEncoder> encoder;
  std::shared_ptr<LayerNorm> post_layernorm;

 private:
  ClipVisionConfig cfg_;
};

// Model::forward: with input_ids and pixel_values, logits = logits_per_image; with one of
// them, pooler_output = that tower's projected features (get_text_features /
// get_image_features) and last_hidden_state = the tower's.
class ClipModel : public Model, public ContrastiveModel {
 public:
  ClipModel(const nlohmann::json& j, const std::string& where);
  std::string type_name() const override { return "CLIPModel"; }
  TaskKind task() const override { return TaskKind::kEncoder; }
  std::string base_model_prefix() const override { return "clip"; }
  int64_t max_positions() const override { return cfg_.text.max_position_embeddings; }
  Embedding* input_embeddings() override { return text_model->embeddings->token_embedding.get(); }
  at::Tensor text_features(const ModelInputs& in) override;
  at::Tensor image_features(const ModelInputs& in) override;
  // These apply an installed input adapter first (visual prompts; Model::forward does the
  // same), as the trainer and zero-shot classification call them directly.
  ContrastiveOutputs forward_contrastive(const ModelInputs& in) override;
  std::shared_ptr<ClipTextTower> text_model;
  std::shared_ptr<ClipVisionTower> vision_model;
  std::shared_ptr<Linear> visual_projection, text_projection;
  at::Tensor logit_scale;

 protected:
  ModelOutputs run(const ModelInputs& in) override;

 private:
  ModelInputs adapted(const ModelInputs& in);  // the input adapter's rewrite of `in`
  ContrastiveOutputs contrastive(const ModelInputs& in);
  at::Tensor projected_image(const ModelInputs& in);
  ClipConfig cfg_;
};

// pooler_output = text_embeds (the projected pooled output).
class ClipTextModelWithProjection : public Model {
 public:
  ClipTextModelWithProjection(const nlohmann::json& j, const std::string& where);
  std::string type_name() const override { return "CLIPTextModelWithProjection"; }
  TaskKind task() const override { return TaskKind::kEncoder; }
  std::string base_model_prefix() const override { return "text_model"; }
  int64_t max_positions() const override { return text_model_cfg_.max_position_embeddings; }
  Embedding* input_embeddings() override { return text_model->embeddings->token_embedding.get(); }
  std::shared_ptr<ClipTextTower> text_model;
  std::shared_ptr<Linear> text_projection;

 protected:
  ModelOutputs run(const ModelInputs& in) override;

 private:
  ClipTextConfig text_model_cfg_;
};

// pooler_output = image_embeds (the projected pooled output).
class ClipVisionModelWithProjection : public Model {
 public:
  ClipVisionModelWithProjection(const nlohmann::json& j, const std::string& where);
  std::string type_name() const override { return "CLIPVisionModelWithProjection"; }
  TaskKind task() const override { return TaskKind::kEncoder; }
  InputKind input_kind() const override { return InputKind::kPixels; }
  std::string base_model_prefix() const override { return "vision_model"; }
  std::shared_ptr<ClipVisionTower> vision_model;
  std::shared_ptr<Linear> visual_projection;

 protected:
  ModelOutputs run(const ModelInputs& in) override;
};

}  // namespace peft
