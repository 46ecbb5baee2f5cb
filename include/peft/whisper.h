// Whisper (speech recognition): generation over log-mel input_features, as
// WhisperForConditionalGeneration.generate does it for short-form audio (one 30 s window,
// no timestamps). The forward is Seq2SeqLM's (include/peft/seq2seq.h) with
// Seq2SeqInputs::input_features set:
//
//   auto model = peft::load_model("whisper-folder");
//   peft::Seq2SeqInputs in;
//   in.input_features = features;            // [batch, num_mel_bins, 2 * max_source_positions] float
//   in.decoder_input_ids = ids;              // [batch, tgt] int64
//   auto out = peft::as_seq2seq(*model)->forward_seq2seq(in);  // out.logits [batch, tgt, vocab]
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "peft/generate.h"
#include "peft/model.h"

namespace peft {

// What transformers reads from generation_config.json to start and steer Whisper's decoder.
struct WhisperGenerationConfig {
  int64_t decoder_start_token_id = 0;  // <|startoftranscript|>
  // The legacy prompt: (position, id) pairs from position 1 on; an id may be null
  // (std::nullopt: the language, then detected). Ignored when language or task is set.
  std::vector<std::pair<int64_t, std::optional<int64_t>>> forced_decoder_ids;
  std::map<std::string, int64_t> lang_to_id;  // "<|en|>" -> id; present: a multilingual model
  std::map<std::string, int64_t> task_to_id;  // "transcribe", "translate"
  std::optional<int64_t> no_timestamps_token_id;
  std::vector<int64_t> suppress_tokens;        // never generated
  std::vector<int64_t> begin_suppress_tokens;  // not generated as the first new token
  std::vector<int64_t> eos_token_ids;
  int64_t pad_token_id = 0;
  std::string language;  // "en" or "<|en|>"; "" = from forced_decoder_ids, else detected
  std::string task;      // "transcribe" / "translate"; "" = from forced_decoder_ids

  // From a parsed generation_config.json (or config.json, whose keys transformers falls
  // back to); errors name `where` and the key.
  static WhisperGenerationConfig from_json(const nlohmann::json& j, const std::string& where);
  // MODEL_DIR/generation_config.json, or config.json when the folder has none.
  static WhisperGenerationConfig load(const std::string& model_dir);
};

// The decoder prompt per row, as transformers' _retrieve_init_tokens builds it:
// decoder_start, the language (given, forced, or detected from the audio: the likeliest
// language token after decoder_start), the task, and <|notimestamps|>.
std::vector<std::vector<int64_t>> whisper_prompts(Model& model, const at::Tensor& input_features,
                                                  const WhisperGenerationConfig& wcfg);

// Greedy or sampled decoding of each row of input_features (the encoder runs once, the
// decoder with the cache), with suppress_tokens masked at every step and
// begin_suppress_tokens at the first. Returns, per row, the prompt followed by the new
// tokens up to and including an EOS token (transformers' sequences with
// return_dict_in_generate). cfg gives max_new_tokens and sampling; the EOS and pad ids are
// wcfg's. The prompt and the new tokens must fit in max_target_positions.
std::vector<std::vector<int64_t>> generate_whisper(Model& model, const at::Tensor& input_features,
                                                   const WhisperGenerationConfig& wcfg, const GenerationConfig& cfg);

}  // namespace peft
