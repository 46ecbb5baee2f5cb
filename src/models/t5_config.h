// What T5 reads from config.json (transformers' T5Config), validated before any module is
// built. No LibTorch here.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace peft {

struct T5Config {
  int64_t vocab_size, d_model, d_kv, d_ff, num_layers, num_decoder_layers, num_heads;
  int64_t relative_attention_num_buckets, relative_attention_max_distance;
  double layer_norm_epsilon;
  std::string dense_act_fn;  // "relu", or "gelu_new" for "gated-gelu" as transformers maps it
  bool is_gated_act;
  // transformers 5: the decoder output is multiplied by d_model**-0.5 before lm_head unless
  // config.json's tie_word_embeddings is false (saved since as scale_decoder_outputs).
  bool scale_decoder_outputs;
  int64_t decoder_start_token_id, pad_token_id;
  static T5Config from_json(const nlohmann::json& j, const std::string& where);
};

}  // namespace peft
