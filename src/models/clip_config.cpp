#include "models/clip_config.h"

#include "models/config_reader.h"
#include "models/model_config.h"  // check_activation

namespace peft {

namespace {

void read_encoder(const ConfigReader& r, ClipEncoderConfig& c, int64_t hidden, int64_t inter, int64_t layers,
                  int64_t heads) {
  c.hidden_size = r.dim("hidden_size", hidden, ConfigLimits::kWidth);
  c.intermediate_size = r.dim("intermediate_size", inter, ConfigLimits::kWidth);
  c.num_layers = r.dim("num_hidden_layers", layers, ConfigLimits::kLayers);
  c.num_heads = r.dim("num_attention_heads", heads, ConfigLimits::kHeads);
  if (c.hidden_size % c.num_heads != 0) r.fail("hidden_size is not a multiple of num_attention_heads");
  c.head_dim = c.hidden_size / c.num_heads;
  c.layer_norm_eps = r.positive("layer_norm_eps", 1e-5);
  c.hidden_act = r.get<std::string>("hidden_act", "quick_gelu");
  check_activation(c.hidden_act);
}

// A tower's config inside CLIPModel's: `key` ("text_config"), with `key`_dict's values over it.
nlohmann::json sub_config(const nlohmann::json& j, const std::string& key, const std::string& where) {
  nlohmann::json out = nlohmann::json::object();
  for (const std::string& k : {key, key.substr(0, key.size() - 7) + "_config_dict"}) {
    if (!j.contains(k) || j[k].is_null()) continue;
    if (!j[k].is_object()) throw std::runtime_error(where + ": '" + k + "' must be an object");
    for (const auto& [name, v] : j[k].items()) out[name] = v;
  }
  return out;
}

}  // namespace

ClipTextConfig ClipTextConfig::from_json(const nlohmann::json& j, const std::string& where) {
  ConfigReader r(j, where);
  ClipTextConfig c;
  read_encoder(r, c, 512, 2048, 12, 8);
  c.vocab_size = r.dim("vocab_size", 49408, ConfigLimits::kVocab);
  c.max_position_embeddings = r.dim("max_position_embeddings", 77, ConfigLimits::kPositions);
  c.projection_dim = r.dim("projection_dim", 512, ConfigLimits::kWidth);
  if (r.has("eos_token_id") && !j["eos_token_id"].is_number_integer())
    r.fail("'eos_token_id' must be one integer (the text tower pools at that token)");
  c.eos_token_id = r.get<int64_t>("eos_token_id", 49407);
  return c;
}

ClipVisionConfig ClipVisionConfig::from_json(const nlohmann::json& j, const std::string& where) {
  ConfigReader r(j, where);
  ClipVisionConfig c;
  read_encoder(r, c, 768, 3072, 12, 12);
  c.image_size = r.dim("image_size", 224, ConfigLimits::kWidth);
  c.patch_size = r.dim("patch_size", 32, ConfigLimits::kWidth);
  c.num_channels = r.dim("num_channels", 3, ConfigLimits::kWidth);
  c.projection_dim = r.dim("projection_dim", 512, ConfigLimits::kWidth);
  if (c.image_size % c.patch_size != 0) r.fail("image_size is not a multiple of patch_size");
  return c;
}

ClipConfig ClipConfig::from_json(const nlohmann::json& j, const std::string& where) {
  ConfigReader r(j, where);
  ClipConfig c;
  c.text = ClipTextConfig::from_json(sub_config(j, "text_config", where), where + ": text_config");
  c.vision = ClipVisionConfig::from_json(sub_config(j, "vision_config", where), where + ": vision_config");
  c.projection_dim = r.dim("projection_dim", 512, ConfigLimits::kWidth);
  return c;
}

}  // namespace peft
