// Contrastive image-text models (CLIP): both towers' projected embeddings, their scaled
// cosine similarities and CLIP's symmetric InfoNCE loss. Such a model is a Model like any
// other for names, loading, adapters and saving; `Model::forward` gives one tower's
// projected features (pooler_output) or, with both inputs, logits_per_image. This
// interface adds the full contrastive forward.
#pragma once

#include <ATen/core/Tensor.h>

#include "peft/model.h"

namespace peft {

struct ContrastiveOutputs {
  at::Tensor logits_per_image;  // [images, texts]: logit_scale.exp() * cosine similarity
  at::Tensor logits_per_text;   // its transpose
  at::Tensor text_embeds;       // [texts, projection_dim], L2-normalized
  at::Tensor image_embeds;      // [images, projection_dim], L2-normalized
};

class ContrastiveModel {
 public:
  virtual ~ContrastiveModel() = default;
  // transformers' get_text_features / get_image_features: the pooled output through the
  // tower's projection, not normalized. Text reads input_ids and attention_mask, images
  // pixel_values.
  virtual at::Tensor text_features(const ModelInputs& in) = 0;
  virtual at::Tensor image_features(const ModelInputs& in) = 0;
  // CLIPModel.forward: both towers, normalized, scaled by logit_scale.exp().
  virtual ContrastiveOutputs forward_contrastive(const ModelInputs& in) = 0;
};

// The model's contrastive interface (CLIPModel), or nullptr.
ContrastiveModel* as_contrastive(Model& model);

// transformers' clip_loss: the mean of the cross-entropies of logits_per_text against
// its diagonal by rows and by columns (text i belongs to image i).
at::Tensor clip_loss(const at::Tensor& logits_per_text);

}  // namespace peft
