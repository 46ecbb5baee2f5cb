#include "models/clip.h"

#include <ATen/ATen.h>

#include <cmath>

#include "models/attention.h"
#include "models/checkpoint.h"

namespace peft {

ClipAttention::ClipAttention(const ClipEncoderConfig& c) : heads_(c.num_heads), head_dim_(c.head_dim) {
  // transformers' order: k, v, q, out (named_parameters and saved files follow it)
  k_proj = register_module("k_proj", std::make_shared<Linear>(c.hidden_size, c.hidden_size, true));
  v_proj = register_module("v_proj", std::make_shared<Linear>(c.hidden_size, c.hidden_size, true));
  q_proj = register_module("q_proj", std::make_shared<Linear>(c.hidden_size, c.hidden_size, true));
  out_proj = register_module("out_proj", std::make_shared<Linear>(c.hidden_size, c.hidden_size, true));
}

at::Tensor ClipAttention::forward(const at::Tensor& h, const at::Tensor& mask, bool causal) {
  auto q = split_heads(q_proj->forward(h), heads_, head_dim_);
  auto k = split_heads(k_proj->forward(h), heads_, head_dim_);
  auto v = split_heads(v_proj->forward(h), heads_, head_dim_);
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim_));
  return out_proj->forward(attend(q, k, v, mask, scale, causal && !mask.defined()));
}

ClipMLP::ClipMLP(const ClipEncoderConfig& c) : act_(c.hidden_act) {
  fc1 = register_module("fc1", std::make_shared<Linear>(c.hidden_size, c.intermediate_size, true));
  fc2 = register_module("fc2", std::make_shared<Linear>(c.intermediate_size, c.hidden_size, true));
}

at::Tensor ClipMLP::base_forward(const at::Tensor& x) { return fc2->forward(activation(act_, fc1->forward(x))); }

ClipEncoderLayer::ClipEncoderLayer(const ClipEncoderConfig& c) {
  self_attn = register_module("self_attn", std::make_shared<ClipAttention>(c));
  layer_norm1 = register_module("layer_norm1", std::make_shared<LayerNorm>(c.hidden_size, c.layer_norm_eps));
  mlp = register_module("mlp", std::make_shared<ClipMLP>(c));
  layer_norm2 = register_module("layer_norm2", std::make_shared<LayerNorm>(c.hidden_size, c.layer_norm_eps));
}

at::Tensor ClipEncoderLayer::forward(const at::Tensor& h, const at::Tensor& mask, bool causal) {
  auto x = h + self_attn->forward(layer_norm1->forward(h), mask, causal);
  return x + mlp->forward(layer_norm2->forward(x));
}

ClipEncoder::ClipEncoder(const ClipEncoderConfig& c) {
  layers = register_module("layers", std::make_shared<ModuleList<ClipEncoderLayer>>());
  for (int64_t i = 0; i < c.num_layers; ++i) layers->push_back(std::make_shared<ClipEncoderLayer>(c));
}

at::Tensor ClipEncoder::forward(at::Tensor h, const at::Tensor& mask, bool causal, bool checkpoint_layers,
                                const std::function<at::Tensor(size_t, const at::Tensor&)>& before_layer) {
  size_t i = 0;
  for (const auto& l : layers->items()) {
    if (before_layer) h = before_layer(i++, h);
    auto fn = [l, mask, causal](const at::Tensor& x) { return l->forward(x, mask, causal); };
    h = checkpoint_layers ? checkpointed(fn, h) : fn(h);
  }
  return h;
}

ClipTextEmbeddings::ClipTextEmbeddings(const ClipTextConfig& c) {
  token_embedding = register_module("token_embedding", std::make_shared<Embedding>(c.vocab_size, c.hidden_size));
  position_embedding =
      register_module("position_embedding", std::make_shared<Embedding>(c.max_position_embeddings, c.hidden_size));
}

at::Tensor ClipTextEmbeddings::forward(const at::Tensor& ids, const at::Tensor& position_ids) {
  const auto positions =
      position_ids.defined() ? position_ids : at::arange(ids.size(1), ids.options().dtype(at::kLong)).unsqueeze(0);
  return token_embedding->forward(ids) + position_embedding->forward(positions);
}

ClipPatchEmbedding::ClipPatchEmbedding(int64_t channels, int64_t hidden, int64_t patch) : patch_(patch) {
  register_parameter("weight", &weight, {hidden, channels, patch, patch});
}

at::Tensor ClipPatchEmbedding::forward(const at::Tensor& x) const {
  return at::conv2d(x, weight, {}, {patch_, patch_});
}

ClipVisionEmbeddings::ClipVisionEmbeddings(const ClipVisionConfig& c) {
  const int64_t patches = (c.image_size / c.patch_size) * (c.image_size / c.patch_size);
  register_parameter("class_embedding", &class_embedding, {c.hidden_size});
  patch_embedding = register_module("patch_embedding",
                                    std::make_shared<ClipPatchEmbedding>(c.num_channels, c.hidden_size, c.patch_size));
  position_embedding = register_module("position_embedding", std::make_shared<Embedding>(patches + 1, c.hidden_size));
}

at::Tensor ClipVisionEmbeddings::forward(const at::Tensor& pixels) {
  auto x = patch_embedding->forward(pixels.to(patch_embedding->weight.scalar_type()));  // [b, hidden, gh, gw]
  x = x.flatten(2).transpose(1, 2);
  auto cls = class_embedding.expand({x.size(0), 1, -1});
  const auto positions = at::arange(x.size(1) + 1, x.options().dtype(at::kLong)).unsqueeze(0);
  return at::cat({cls, x}, 1) + position_embedding->forward(positions);
}

ClipTextTower::ClipTextTower(const ClipTextConfig& c) : cfg_(c) {
  embeddings = register_module("embeddings", std::make_shared<ClipTextEmbeddings>(c));
  encoder = register_module("encoder", std::make_shared<ClipEncoder>(c));
  final_layer_norm = register_module("final_layer_norm", std::make_shared<LayerNorm>(c.hidden_size, c.layer_norm_eps));
}

ModelOutputs ClipTextTower::forward(const ModelInputs& in) {
  if (!in.input_ids.defined()) throw std::invalid_argument("the CLIP text tower needs input_ids");
  const auto& ids = in.input_ids;
  if (ids.size(1) > cfg_.max_position_embeddings)
    throw std::invalid_argument("CLIP's text tower takes at most " + std::to_string(cfg_.max_position_embeddings) +
                                " tokens, got " + std::to_string(ids.size(1)) + " (truncate, e.g. max_length)");
  auto h = embeddings->forward(ids, in.position_ids);
  const int64_t b = ids.size(0), s = ids.size(1);
  // Causal, and padding when a mask has any; no mask: SDPA's own causal kernel.
  at::Tensor mask;
  if (in.attention_mask.defined() && !in.attention_mask.all().item<bool>())
    mask = make_attention_mask(in.attention_mask, b, s, s, /*causal=*/true, h.device());
  h = encoder->forward(h, mask, /*causal=*/true, in.checkpoint_layers);
  ModelOutputs out;
  out.last_hidden_state = final_layer_norm->forward(h);
  // transformers: with the legacy eos_token_id 2 the largest id (the end-of-text token has
  // the largest id in CLIP's vocabulary); otherwise the first eos_token_id of each row
  // (position 0 when a row has none).
  const auto ids32 = ids.to(at::kInt);
  const auto where = cfg_.eos_token_id == 2 ? ids32.argmax(-1) : (ids32 == cfg_.eos_token_id).to(at::kInt).argmax(-1);
  const auto rows = at::arange(b, where.options().dtype(at::kLong)) * s + where.to(at::kLong);
  out.pooler_output = out.last_hidden_state.reshape({b * s, -1}).index_select(0, rows);
  return out;
}

ClipVisionTower::ClipVisionTower(const ClipVisionConfig& c) : cfg_(c) {
  embeddings = register_module("embeddings", std::make_shared<ClipVisionEmbeddings>(c));
  pre_layrnorm = register_module("pre_layrnorm", std::make_shared<LayerNorm>(c.hidden_size, c.layer_norm_eps));
  encoder = register_module("encoder", std::make_shared<ClipEncoder>(c));
  post_layernorm = register_module("post_layernorm", std::make_shared<LayerNorm>(c.hidden_size, c.layer_norm_eps));
}

ModelOutputs ClipVisionTower::forward(const ModelInputs& in) {
  const auto& px = in.pixel_values;
  if (!px.defined()) throw std::invalid_argument("the CLIP vision tower needs pixel_values");
  if (px.dim() != 4 || px.size(1) != cfg_.num_channels || px.size(2) != cfg_.image_size ||
      px.size(3) != cfg_.image_size || !px.is_floating_point())
    throw std::invalid_argument("pixel_values must be float [batch, " + std::to_string(cfg_.num_channels) + ", " +
                                std::to_string(cfg_.image_size) + ", " + std::to_string(cfg_.image_size) + "], got " +
                                c10::str(px.sizes()) + " " + c10::toString(px.scalar_type()));
  auto h = pre_layrnorm->forward(embeddings->forward(px));
  ModelOutputs out;
  out.last_hidden_state = encoder->forward(h, {}, /*causal=*/false, in.checkpoint_layers, in.before_layer);
  out.pooler_output = post_layernorm->forward(out.last_hidden_state.select(1, 0));
  return out;
}

ClipModel::ClipModel(const nlohmann::json& j, const std::string& where)
    : Model(j), cfg_(ClipConfig::from_json(j, where)) {
  text_model = register_module("text_model", std::make_shared<ClipTextTower>(cfg_.text));
  vision_model = register_module("vision_model", std::make_shared<ClipVisionTower>(cfg_.vision));
  visual_projection = register_module(
      "visual_projection", std::make_shared<Linear>(cfg_.vision.hidden_size, cfg_.projection_dim, false));
  text_projection =
      register_module("text_projection", std::make_shared<Linear>(cfg_.text.hidden_size, cfg_.projection_dim, false));
  register_parameter("logit_scale", &logit_scale, {});
}

at::Tensor ClipModel::text_features(const ModelInputs& in) {
  return text_projection->forward(text_model->forward(in).pooler_output);
}

at::Tensor ClipModel::image_features(const ModelInputs& in) { return projected_image(adapted(in)); }

at::Tensor ClipModel::projected_image(const ModelInputs& in) {
  return visual_projection->forward(vision_model->forward(in).pooler_output);
}

ModelInputs ClipModel::adapted(const ModelInputs& in) {
  ModelInputs out = in;
  // Virtual tokens before the text would shift the pooled end-of-text position.
  if (input_adapter && input_adapter->prepare(*this, out) != 0)
    throw std::invalid_argument(input_adapter->type_name() + " is not supported on " + type_name() +
                                " (its towers take visual prompts and layer adapters)");
  return out;
}

ContrastiveOutputs ClipModel::forward_contrastive(const ModelInputs& in) {
  check_inputs(in);
  return contrastive(adapted(in));
}

ContrastiveOutputs ClipModel::contrastive(const ModelInputs& in) {
  // transformers' _get_vector_norm: sum of squares to the power 0.5
  auto normalized = [](const at::Tensor& x) { return x / x.pow(2).sum(-1, true).pow(0.5); };
  ContrastiveOutputs out;
  out.image_embeds = normalized(projected_image(in));
  out.text_embeds = normalized(text_features(in));
  out.logits_per_text = at::matmul(out.text_embeds, out.image_embeds.t()) * logit_scale.exp();
  out.logits_per_image = out.logits_per_text.t();
  return out;
}

ModelOutputs ClipModel::run(const ModelInputs& in) {
  ModelOutputs out;
  if (in.input_ids.defined() && in.pixel_values.defined()) {
    out.logits = contrastive(in).logits_per_image;
  } else if (in.input_ids.defined()) {
    out = text_model->forward(in);
    out.pooler_output = text_projection->forward(out.pooler_output);
  } else {
    out = vision_model->forward(in);
    out.pooler_output = visual_projection->forward(out.pooler_output);
  }
  return out;
}

ClipTextModelWithProjection::ClipTextModelWithProjection(const nlohmann::json& j, const std::string& where)
    : Model(j), text_model_cfg_(ClipTextConfig::from_json(j, where)) {
  text_model = register_module("text_model", std::make_shared<ClipTextTower>(text_model_cfg_));
  text_projection = register_module(
      "text_projection",
      std::make_shared<Linear>(text_model_cfg_.hidden_size, text_model_cfg_.projection_dim, false));
}

ModelOutputs ClipTextModelWithProjection::run(const ModelInputs& in) {
  auto out = text_model->forward(in);
  out.pooler_output = text_projection->forward(out.pooler_output);
  return out;
}

ClipVisionModelWithProjection::ClipVisionModelWithProjection(const nlohmann::json& j, const std::string& where)
    : Model(j) {
  const auto c = ClipVisionConfig::from_json(j, where);
  vision_model = register_module("vision_model", std::make_shared<ClipVisionTower>(c));
  visual_projection =
      register_module("visual_projection", std::make_shared<Linear>(c.hidden_size, c.projection_dim, false));
}

ModelOutputs ClipVisionModelWithProjection::run(const ModelInputs& in) {
  auto out = vision_model->forward(in);
  out.pooler_output = visual_projection->forward(out.pooler_output);
  return out;
}

ContrastiveModel* as_contrastive(Model& model) { return dynamic_cast<ContrastiveModel*>(&model); }

at::Tensor clip_loss(const at::Tensor& logits_per_text) {
  // contrastive_loss(logits): cross-entropy against arange(len(logits)), by texts and by images
  auto contrastive = [](const at::Tensor& logits) {
    return at::cross_entropy_loss(logits, at::arange(logits.size(0), logits.options().dtype(at::kLong)));
  };
  return (contrastive(logits_per_text) + contrastive(logits_per_text.t())) / 2.0;
}

}  // namespace peft
