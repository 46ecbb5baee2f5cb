#include "models/vit.h"

#include <cstring>

#include <ATen/ATen.h>

#include <cmath>
#include <regex>

#include "models/bert.h"
#include "models/checkpoint.h"
#include "models/config_reader.h"

namespace peft {


ViTPatchEmbeddings::ViTPatchEmbeddings(const ViTConfig& c) {
  projection = register_module("projection",
                               std::make_shared<Conv2d>(c.num_channels, c.hidden_size, c.patch_size, c.patch_size));
}

ViTEmbeddings::ViTEmbeddings(const ViTConfig& c) : image_size_(c.image_size), num_channels_(c.num_channels) {
  const int64_t patches = (c.image_size / c.patch_size) * (c.image_size / c.patch_size);
  register_parameter("cls_token", &cls_token, {1, 1, c.hidden_size});
  register_parameter("position_embeddings", &position_embeddings, {1, patches + 1, c.hidden_size});
  patch_embeddings = register_module("patch_embeddings", std::make_shared<ViTPatchEmbeddings>(c));
}

at::Tensor ViTEmbeddings::forward(const at::Tensor& pixels) {
  if (pixels.dim() != 4 || pixels.size(1) != num_channels_ || pixels.size(2) != image_size_ ||
      pixels.size(3) != image_size_)
    throw std::invalid_argument("pixel_values has shape " + c10::str(pixels.sizes()) + ", expected [batch, " +
                                std::to_string(num_channels_) + ", " + std::to_string(image_size_) + ", " +
                                std::to_string(image_size_) + "]");
  auto x = patch_embeddings->projection->forward(pixels.to(cls_token.scalar_type()));  // [b, h, gh, gw]
  x = x.flatten(2).transpose(1, 2);
  auto cls = cls_token.expand({x.size(0), -1, -1});
  return at::cat({cls, x}, 1) + position_embeddings;
}

ViTAttention::ViTAttention(const ViTConfig& c) : heads_(c.num_heads), head_dim_(c.head_dim) {
  const int64_t inner = heads_ * head_dim_;
  q_proj = register_module("q_proj", std::make_shared<Linear>(c.hidden_size, inner, c.qkv_bias));
  k_proj = register_module("k_proj", std::make_shared<Linear>(c.hidden_size, inner, c.qkv_bias));
  v_proj = register_module("v_proj", std::make_shared<Linear>(c.hidden_size, inner, c.qkv_bias));
  o_proj = register_module("o_proj", std::make_shared<Linear>(inner, c.hidden_size, true));
}

at::Tensor ViTAttention::forward(const at::Tensor& h) {
  auto q = split_heads(q_proj->forward(h), heads_, head_dim_);
  auto k = split_heads(k_proj->forward(h), heads_, head_dim_);
  auto v = split_heads(v_proj->forward(h), heads_, head_dim_);
  return o_proj->forward(attend(q, k, v, at::Tensor(), 1.0 / std::sqrt(static_cast<double>(head_dim_))));
}

ViTMLP::ViTMLP(const ViTConfig& c) : act_(c.hidden_act) {
  fc1 = register_module("fc1", std::make_shared<Linear>(c.hidden_size, c.intermediate_size, true));
  fc2 = register_module("fc2", std::make_shared<Linear>(c.intermediate_size, c.hidden_size, true));
}

at::Tensor ViTMLP::base_forward(const at::Tensor& x) { return fc2->forward(activation(act_, fc1->forward(x))); }

ViTLayer::ViTLayer(const ViTConfig& c) {
  attention = register_module("attention", std::make_shared<ViTAttention>(c));
  layernorm_before = register_module("layernorm_before", std::make_shared<LayerNorm>(c.hidden_size, c.layer_norm_eps));
  layernorm_after = register_module("layernorm_after", std::make_shared<LayerNorm>(c.hidden_size, c.layer_norm_eps));
  mlp = register_module("mlp", std::make_shared<ViTMLP>(c));
}

at::Tensor ViTLayer::forward(const at::Tensor& h) {
  auto x = h + attention->forward(layernorm_before->forward(h));
  return x + mlp->forward(layernorm_after->forward(x));
}

ViTPooler::ViTPooler(const ViTConfig& c) : act_(c.pooler_act) {
  dense = register_module("dense", std::make_shared<Linear>(c.hidden_size, c.pooler_output_size, true));
}

at::Tensor ViTPooler::forward(const at::Tensor& h) { return activation(act_, dense->forward(h.select(1, 0))); }

ViTModel::ViTModel(const nlohmann::json& j, const std::string& where, bool add_pooling_layer)
    : Model(j), cfg_(ViTConfig::from_json(j, where)) {
  embeddings = register_module("embeddings", std::make_shared<ViTEmbeddings>(cfg_));
  layers = register_module("layers", std::make_shared<ModuleList<ViTLayer>>());
  for (int64_t i = 0; i < cfg_.num_layers; ++i) layers->push_back(std::make_shared<ViTLayer>(cfg_));
  layernorm = register_module("layernorm", std::make_shared<LayerNorm>(cfg_.hidden_size, cfg_.layer_norm_eps));
  if (add_pooling_layer) pooler = register_module("pooler", std::make_shared<ViTPooler>(cfg_));
}

ModelOutputs ViTModel::run(const ModelInputs& in) {
  if (!in.pixel_values.defined()) throw std::invalid_argument("ViT needs pixel_values");
  const auto& px = in.pixel_values;
  if (px.dim() != 4 || px.size(1) != cfg_.num_channels || px.size(2) != cfg_.image_size ||
      px.size(3) != cfg_.image_size || !px.is_floating_point())
    throw std::invalid_argument("pixel_values must be float [batch, " + std::to_string(cfg_.num_channels) + ", " +
                                std::to_string(cfg_.image_size) + ", " + std::to_string(cfg_.image_size) + "], got " +
                                c10::str(px.sizes()) + " " + c10::toString(px.scalar_type()));
  auto h = embeddings->forward(in.pixel_values);
  for (size_t i = 0; i < layers->size(); ++i) {
    const auto& l = layers->items()[i];
    if (in.before_layer) h = in.before_layer(i, h);
    h = in.checkpoint_layers ? checkpointed([l](const at::Tensor& x) { return l->forward(x); }, h) : l->forward(h);
  }
  ModelOutputs out;
  out.last_hidden_state = layernorm->forward(h);
  if (pooler) out.pooler_output = pooler->forward(out.last_hidden_state);
  return out;
}

ViTForImageClassification::ViTForImageClassification(const nlohmann::json& j, const std::string& where)
    : Model(j) {
  vit = register_module("vit", std::make_shared<ViTModel>(j, where, /*add_pooling_layer=*/false));
  const auto c = ViTConfig::from_json(j, where);
  classifier = register_module("classifier", std::make_shared<Linear>(c.hidden_size, c.num_labels, true));
}

ModelOutputs ViTForImageClassification::run(const ModelInputs& in) {
  auto out = vit->forward(in);
  out.logits = classifier->forward(out.last_hidden_state.select(1, 0));
  return out;
}

std::string vit_rename_legacy_key(const std::string& key) {
  // The same renames, in the same order, as transformers' conversion mapping for ViT.
  static const std::pair<std::regex, std::string> kRules[] = {
      {std::regex(R"(encoder\.layer\.)"), "layers."},
      {std::regex(R"(attention\.query)"), "q_proj"},
      {std::regex(R"(attention\.key)"), "k_proj"},
      {std::regex(R"(attention\.value)"), "v_proj"},
      {std::regex(R"(attention\.output\.dense)"), "attention.o_proj"},
      {std::regex(R"(intermediate\.dense)"), "mlp.fc1"},
      {std::regex(R"(output\.dense)"), "mlp.fc2"},
  };
  std::string k = key;
  for (const auto& [re, to] : kRules) k = std::regex_replace(k, re, to);
  return k;
}

std::string vit_legacy_key(const std::string& name) {
  static const std::pair<const char*, const char*> kBack[] = {
      {".attention.q_proj.", ".attention.attention.query."}, {".attention.k_proj.", ".attention.attention.key."},
      {".attention.v_proj.", ".attention.attention.value."}, {".attention.o_proj.", ".attention.output.dense."},
      {".mlp.fc1.", ".intermediate.dense."},                 {".mlp.fc2.", ".output.dense."}};
  std::string key = name;
  for (const auto& [from, to] : kBack)
    if (auto p = key.find(from); p != std::string::npos) key.replace(p, std::strlen(from), to);
  if (key.rfind("layers.", 0) == 0) key = "encoder.layer." + key.substr(7);
  if (auto p = key.find(".layers."); p != std::string::npos) key.replace(p, 8, ".encoder.layer.");
  return key;
}

}  // namespace peft
