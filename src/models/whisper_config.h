// What Whisper reads from config.json (transformers' WhisperConfig), validated before any
// module is built. No LibTorch here.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace peft {

struct WhisperConfig {
  int64_t vocab_size, num_mel_bins, d_model;
  int64_t encoder_layers, encoder_attention_heads, encoder_ffn_dim;
  int64_t decoder_layers, decoder_attention_heads, decoder_ffn_dim;
  int64_t max_source_positions, max_target_positions;
  std::string activation_function;
  // proj_out shares decoder.embed_tokens' weight (transformers' default).
  bool tie_word_embeddings;
  int64_t decoder_start_token_id, pad_token_id;
  // The encoder's input length in mel frames: two per position (conv2 has stride 2).
  int64_t input_frames() const { return 2 * max_source_positions; }
  static WhisperConfig from_json(const nlohmann::json& j, const std::string& where);
};

}  // namespace peft
