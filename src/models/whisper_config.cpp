#include "models/whisper_config.h"

#include "models/config_reader.h"
#include "models/model_config.h"

namespace peft {

WhisperConfig WhisperConfig::from_json(const nlohmann::json& j, const std::string& where) {
  ConfigReader r(j, where);
  using L = ConfigLimits;
  WhisperConfig c;
  // Defaults are WhisperConfig's (whisper-tiny's sizes).
  c.vocab_size = r.dim("vocab_size", 51865, L::kVocab);
  c.num_mel_bins = r.dim("num_mel_bins", 80, L::kWidth);
  c.d_model = r.dim("d_model", 384, L::kWidth);
  c.encoder_layers = r.dim("encoder_layers", 4, L::kLayers);
  c.encoder_attention_heads = r.dim("encoder_attention_heads", 6, L::kHeads);
  c.encoder_ffn_dim = r.dim("encoder_ffn_dim", 1536, L::kWidth);
  c.decoder_layers = r.dim("decoder_layers", 4, L::kLayers);
  c.decoder_attention_heads = r.dim("decoder_attention_heads", 6, L::kHeads);
  c.decoder_ffn_dim = r.dim("decoder_ffn_dim", 1536, L::kWidth);
  for (const auto& [key, heads] : {std::pair{"encoder_attention_heads", c.encoder_attention_heads},
                                   std::pair{"decoder_attention_heads", c.decoder_attention_heads}})
    if (c.d_model % heads != 0)
      r.fail("'d_model' " + std::to_string(c.d_model) + " is not divisible by '" + key + "' " + std::to_string(heads));
  c.max_source_positions = r.dim("max_source_positions", 1500, L::kPositions);
  c.max_target_positions = r.dim("max_target_positions", 448, L::kPositions);
  c.activation_function = r.get<std::string>("activation_function", "gelu");
  check_activation(c.activation_function);
  c.tie_word_embeddings = r.get<bool>("tie_word_embeddings", true);
  c.pad_token_id = r.get<int64_t>("pad_token_id", 50256);
  c.decoder_start_token_id = r.get<int64_t>("decoder_start_token_id", 50257);
  for (const auto& [key, id] : {std::pair{"pad_token_id", c.pad_token_id},
                                std::pair{"decoder_start_token_id", c.decoder_start_token_id}})
    if (id < 0 || id >= c.vocab_size)
      r.fail(std::string("'") + key + "' must be a token id below vocab_size " + std::to_string(c.vocab_size));
  return c;
}

}  // namespace peft
