// CLIP's config.json: CLIPModel nests a text and a vision config (text_config,
// vision_config, and the older text_config_dict / vision_config_dict overriding them);
// CLIPTextModelWithProjection and CLIPVisionModelWithProjection hold one flat. Defaults
// are transformers' CLIPTextConfig / CLIPVisionConfig / CLIPConfig ones.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace peft {

// What both towers' encoders read.
struct ClipEncoderConfig {
  int64_t hidden_size, intermediate_size, num_layers, num_heads, head_dim;
  double layer_norm_eps;
  std::string hidden_act;
};

struct ClipTextConfig : ClipEncoderConfig {
  int64_t vocab_size, max_position_embeddings, eos_token_id, projection_dim;
  static ClipTextConfig from_json(const nlohmann::json& j, const std::string& where);
};

struct ClipVisionConfig : ClipEncoderConfig {
  int64_t image_size, patch_size, num_channels, projection_dim;
  static ClipVisionConfig from_json(const nlohmann::json& j, const std::string& where);
};

// CLIPModel's: both towers and the shared projection width.
struct ClipConfig {
  ClipTextConfig text;
  ClipVisionConfig vision;
  int64_t projection_dim;
  static ClipConfig from_json(const nlohmann::json& j, const std::string& where);
};

}  // namespace peft
