#include "models/dinov2.h"

#include <ATen/ATen.h>

#include <cmath>
#include <cstring>
#include <regex>

#include "models/attention.h"
#include "models/checkpoint.h"
#include "models/config_reader.h"
#include "models/model_config.h"

namespace peft {

Dinov2Config Dinov2Config::from_json(const nlohmann::json& j, const std::string& where) {
  ConfigReader r(j, where);
  Dinov2Config c;
  c.hidden_size = r.dim("hidden_size", 768, ConfigLimits::kWidth);
  c.num_layers = r.dim("num_hidden_layers", 12, ConfigLimits::kLayers);
  c.num_heads = r.dim("num_attention_heads", 12, ConfigLimits::kHeads);
  if (c.hidden_size % c.num_heads != 0) r.fail("hidden_size is not a multiple of num_attention_heads");
  c.head_dim = c.hidden_size / c.num_heads;
  const double ratio = r.positive("mlp_ratio", 4.0);
  if (ratio * static_cast<double>(c.hidden_size) > static_cast<double>(ConfigLimits::kWidth))
    r.fail("'mlp_ratio' makes the MLP wider than " + std::to_string(ConfigLimits::kWidth));
  c.mlp_hidden = static_cast<int64_t>(static_cast<double>(c.hidden_size) * ratio);  // int(hidden * mlp_ratio)
  c.use_swiglu_ffn = r.get<bool>("use_swiglu_ffn", false);
  if (c.use_swiglu_ffn)  // two thirds, rounded up to a multiple of 8, as Dinov2SwiGLUFFN
    c.mlp_hidden = (static_cast<int64_t>(static_cast<double>(c.mlp_hidden) * 2.0 / 3.0) + 7) / 8 * 8;
  if (c.mlp_hidden < 1) r.fail("'mlp_ratio' leaves the MLP without units");
  c.hidden_act = r.get<std::string>("hidden_act", "gelu");
  check_activation(c.hidden_act);
  c.layer_norm_eps = r.positive("layer_norm_eps", 1e-6);
  c.layerscale_value = r.get<double>("layerscale_value", 1.0);
  if (!std::isfinite(c.layerscale_value)) r.fail("'layerscale_value' must be finite");
  c.image_size = r.dim("image_size", 224, ConfigLimits::kPositions);
  c.patch_size = r.dim("patch_size", 14, 4096);
  if (c.patch_size > c.image_size) r.fail("'patch_size' is larger than 'image_size'");
  const int64_t side = c.image_size / c.patch_size;
  if (side * side > ConfigLimits::kPositions) r.fail("'image_size' / 'patch_size' gives too many patches");
  c.num_channels = r.dim("num_channels", 3, 64);
  c.qkv_bias = r.get<bool>("qkv_bias", true);
  c.use_mask_token = r.get<bool>("use_mask_token", true);
  c.num_labels = num_labels_of(j, where);
  return c;
}

Dinov2PatchEmbeddings::Dinov2PatchEmbeddings(const Dinov2Config& c) {
  projection = register_module("projection",
                               std::make_shared<Conv2d>(c.num_channels, c.hidden_size, c.patch_size, c.patch_size));
}

Dinov2Embeddings::Dinov2Embeddings(const Dinov2Config& c) : c_(c) {
  const int64_t side = c.image_size / c.patch_size;
  register_parameter("cls_token", &cls_token, {1, 1, c.hidden_size});
  if (c.use_mask_token) register_parameter("mask_token", &mask_token, {1, c.hidden_size});
  patch_embeddings = register_module("patch_embeddings", std::make_shared<Dinov2PatchEmbeddings>(c));
  register_parameter("position_embeddings", &position_embeddings, {1, side * side + 1, c.hidden_size});
}

at::Tensor Dinov2Embeddings::positions_for(int64_t height, int64_t width) const {
  const int64_t side = c_.image_size / c_.patch_size, rows = height / c_.patch_size, cols = width / c_.patch_size;
  if (rows * cols == side * side && height == width) return position_embeddings;
  const int64_t dim = position_embeddings.size(-1);
  const auto patch = position_embeddings.narrow(1, 1, side * side).reshape({1, side, side, dim}).permute({0, 3, 1, 2});
  const auto resampled = at::upsample_bicubic2d(patch.to(at::kFloat), {rows, cols}, /*align_corners=*/false)
                             .to(position_embeddings.scalar_type());
  return at::cat({position_embeddings.narrow(1, 0, 1), resampled.permute({0, 2, 3, 1}).reshape({1, rows * cols, dim})},
                 1);
}

at::Tensor Dinov2Embeddings::forward(const at::Tensor& pixels) {
  auto x = patch_embeddings->projection->forward(pixels.to(cls_token.scalar_type()));  // [b, hidden, gh, gw]
  x = x.flatten(2).transpose(1, 2);
  return at::cat({cls_token.expand({x.size(0), -1, -1}), x}, 1) + positions_for(pixels.size(2), pixels.size(3));
}

Dinov2Attention::Dinov2Attention(const Dinov2Config& c) : heads_(c.num_heads), head_dim_(c.head_dim) {
  q_proj = register_module("q_proj", std::make_shared<Linear>(c.hidden_size, c.hidden_size, c.qkv_bias));
  k_proj = register_module("k_proj", std::make_shared<Linear>(c.hidden_size, c.hidden_size, c.qkv_bias));
  v_proj = register_module("v_proj", std::make_shared<Linear>(c.hidden_size, c.hidden_size, c.qkv_bias));
  o_proj = register_module("o_proj", std::make_shared<Linear>(c.hidden_size, c.hidden_size, true));
}

at::Tensor Dinov2Attention::forward(const at::Tensor& h) {
  const auto q = split_heads(q_proj->forward(h), heads_, head_dim_);
  const auto k = split_heads(k_proj->forward(h), heads_, head_dim_);
  const auto v = split_heads(v_proj->forward(h), heads_, head_dim_);
  return o_proj->forward(attend(q, k, v, at::Tensor(), 1.0 / std::sqrt(static_cast<double>(head_dim_))));
}

Dinov2LayerScale::Dinov2LayerScale(int64_t hidden) { register_parameter("lambda1", &lambda1, {hidden}); }

Dinov2MLP::Dinov2MLP(const Dinov2Config& c) : swiglu_(c.use_swiglu_ffn), hidden_(c.hidden_size), act_(c.hidden_act) {
  if (swiglu_) {
    gate_proj = register_module("gate_proj", std::make_shared<Linear>(c.hidden_size, c.mlp_hidden, true));
    up_proj = register_module("up_proj", std::make_shared<Linear>(c.hidden_size, c.mlp_hidden, true));
    down_proj = register_module("down_proj", std::make_shared<Linear>(c.mlp_hidden, c.hidden_size, true));
  } else {
    fc1 = register_module("fc1", std::make_shared<Linear>(c.hidden_size, c.mlp_hidden, true));
    fc2 = register_module("fc2", std::make_shared<Linear>(c.mlp_hidden, c.hidden_size, true));
  }
}

at::Tensor Dinov2MLP::base_forward(const at::Tensor& x) {
  if (swiglu_) return down_proj->forward(at::silu(gate_proj->forward(x)) * up_proj->forward(x));
  return fc2->forward(activation(act_, fc1->forward(x)));
}

Dinov2Layer::Dinov2Layer(const Dinov2Config& c) {
  norm1 = register_module("norm1", std::make_shared<LayerNorm>(c.hidden_size, c.layer_norm_eps));
  attention = register_module("attention", std::make_shared<Dinov2Attention>(c));
  layer_scale1 = register_module("layer_scale1", std::make_shared<Dinov2LayerScale>(c.hidden_size));
  norm2 = register_module("norm2", std::make_shared<LayerNorm>(c.hidden_size, c.layer_norm_eps));
  mlp = register_module("mlp", std::make_shared<Dinov2MLP>(c));
  layer_scale2 = register_module("layer_scale2", std::make_shared<Dinov2LayerScale>(c.hidden_size));
}

at::Tensor Dinov2Layer::forward(const at::Tensor& h) {
  const auto x = h + layer_scale1->forward(attention->forward(norm1->forward(h)));
  return x + layer_scale2->forward(mlp->forward(norm2->forward(x)));
}

Dinov2Encoder::Dinov2Encoder(const Dinov2Config& c) {
  layer = register_module("layer", std::make_shared<ModuleList<Dinov2Layer>>());
  for (int64_t i = 0; i < c.num_layers; ++i) layer->push_back(std::make_shared<Dinov2Layer>(c));
}

std::string dinov2_rename_legacy_key(const std::string& key) {
  // transformers' conversion mapping for Dinov2Model, in its order.
  static const std::pair<std::regex, std::string> kRules[] = {
      {std::regex(R"(attention\.attention\.query)"), "attention.q_proj"},
      {std::regex(R"(attention\.attention\.key)"), "attention.k_proj"},
      {std::regex(R"(attention\.attention\.value)"), "attention.v_proj"},
      {std::regex(R"(attention\.output\.dense)"), "attention.o_proj"},
      {std::regex(R"(mlp\.weights_out)"), "mlp.down_proj"},
  };
  if (key.find("attention.") == std::string::npos && key.find("weights_out") == std::string::npos) return key;
  std::string k = key;
  for (const auto& [re, to] : kRules) k = std::regex_replace(k, re, to);
  return k;
}

std::string dinov2_legacy_key(const std::string& name) {
  static const std::pair<const char*, const char*> kBack[] = {
      {".attention.q_proj.", ".attention.attention.query."}, {".attention.k_proj.", ".attention.attention.key."},
      {".attention.v_proj.", ".attention.attention.value."}, {".attention.o_proj.", ".attention.output.dense."},
      {".mlp.down_proj.", ".mlp.weights_out."}};
  std::string key = name;
  for (const auto& [from, to] : kBack)
    if (auto p = key.find(from); p != std::string::npos) key.replace(p, std::strlen(from), to);
  return key;
}

Dinov2Model::Dinov2Model(const nlohmann::json& j, const std::string& where)
    : Model(j), cfg_(Dinov2Config::from_json(j, where)) {
  embeddings = register_module("embeddings", std::make_shared<Dinov2Embeddings>(cfg_));
  encoder = register_module("encoder", std::make_shared<Dinov2Encoder>(cfg_));
  layernorm = register_module("layernorm", std::make_shared<LayerNorm>(cfg_.hidden_size, cfg_.layer_norm_eps));
}

ModelOutputs Dinov2Model::run(const ModelInputs& in) {
  if (!in.pixel_values.defined()) throw std::invalid_argument("Dinov2Model needs pixel_values");
  const auto& px = in.pixel_values;
  const int64_t p = cfg_.patch_size;
  if (px.dim() != 4 || px.size(1) != cfg_.num_channels || px.size(2) < p || px.size(3) < p ||
      px.size(2) > 64 * cfg_.image_size || px.size(3) > 64 * cfg_.image_size || !px.is_floating_point())
    throw std::invalid_argument("pixel_values must be float [batch, " + std::to_string(cfg_.num_channels) +
                                ", height, width] with sides from " + std::to_string(p) + " (patch_size) to " +
                                std::to_string(64 * cfg_.image_size) + ", got " + c10::str(px.sizes()) + " " +
                                c10::toString(px.scalar_type()));
  auto h = embeddings->forward(px);
  const auto& layers = encoder->layer->items();
  for (size_t i = 0; i < layers.size(); ++i) {
    const auto& l = layers[i];
    if (in.before_layer) h = in.before_layer(i, h);
    h = in.checkpoint_layers ? checkpointed([l](const at::Tensor& x) { return l->forward(x); }, h) : l->forward(h);
  }
  ModelOutputs out;
  out.last_hidden_state = layernorm->forward(h);
  out.pooler_output = out.last_hidden_state.select(1, 0);
  return out;
}

Dinov2ForImageClassification::Dinov2ForImageClassification(const nlohmann::json& j, const std::string& where)
    : Model(j) {
  dinov2 = register_module("dinov2", std::make_shared<Dinov2Model>(j, where));
  const auto& c = dinov2->dinov2_config();
  classifier = register_module("classifier", std::make_shared<Linear>(2 * c.hidden_size, c.num_labels, true));
}

ModelOutputs Dinov2ForImageClassification::run(const ModelInputs& in) {
  auto out = dinov2->forward(in);
  const auto& h = out.last_hidden_state;
  const auto patches = h.narrow(1, 1, h.size(1) - 1);
  out.logits = classifier->forward(at::cat({h.select(1, 0), patches.mean(1)}, 1));
  return out;
}

}  // namespace peft
