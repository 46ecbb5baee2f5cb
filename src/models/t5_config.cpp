#include "models/t5_config.h"

#include "models/config_reader.h"
#include "models/model_config.h"

namespace peft {

T5Config T5Config::from_json(const nlohmann::json& j, const std::string& where) {
  ConfigReader r(j, where);
  using L = ConfigLimits;
  T5Config c;
  c.vocab_size = r.dim("vocab_size", 32128, L::kVocab);
  c.d_model = r.dim("d_model", 512, L::kWidth);
  c.d_kv = r.dim("d_kv", 64, L::kWidth);
  c.d_ff = r.dim("d_ff", 2048, L::kWidth);
  c.num_layers = r.dim("num_layers", 6, L::kLayers);
  c.num_decoder_layers = r.dim("num_decoder_layers", c.num_layers, L::kLayers);
  c.num_heads = r.dim("num_heads", 8, L::kHeads);
  if (c.num_heads * c.d_kv > L::kWidth) r.fail("num_heads x d_kv is too large");
  c.relative_attention_num_buckets = r.dim("relative_attention_num_buckets", 32, L::kPositions);
  if (c.relative_attention_num_buckets < 4)
    r.fail("'relative_attention_num_buckets' must be at least 4 (half exact, half logarithmic, per direction)");
  c.relative_attention_max_distance = r.dim("relative_attention_max_distance", 128, L::kPositions);
  c.layer_norm_epsilon = r.positive("layer_norm_epsilon", 1e-6);
  // transformers: "gated-ACT" or "ACT"; gated-gelu means gelu_new.
  const std::string proj = r.get<std::string>("feed_forward_proj", "relu");
  const auto dash = proj.find('-');
  if (dash != std::string::npos && (proj.substr(0, dash) != "gated" || proj.find('-', dash + 1) != std::string::npos))
    r.fail("'feed_forward_proj' must be 'ACT' or 'gated-ACT', got '" + proj + "'");
  c.is_gated_act = dash != std::string::npos;
  c.dense_act_fn = proj == "gated-gelu" ? "gelu_new" : proj.substr(dash == std::string::npos ? 0 : dash + 1);
  check_activation(c.dense_act_fn);
  c.scale_decoder_outputs = r.has("scale_decoder_outputs") ? r.get<bool>("scale_decoder_outputs")
                                                           : r.get<bool>("tie_word_embeddings", true);
  c.pad_token_id = r.get<int64_t>("pad_token_id", 0);
  c.decoder_start_token_id = r.get<int64_t>("decoder_start_token_id", c.pad_token_id);
  auto check_id = [&](const char* key, int64_t v) {
    if (v < 0 || v >= c.vocab_size)
      r.fail(std::string("'") + key + "' must be a token id below vocab_size " + std::to_string(c.vocab_size));
  };
  check_id("pad_token_id", c.pad_token_id);
  check_id("decoder_start_token_id", c.decoder_start_token_id);
  if (r.get<bool>("is_decoder", false)) r.fail("'is_decoder' true is not a T5ForConditionalGeneration config");
  return c;
}

}  // namespace peft
