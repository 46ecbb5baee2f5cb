// Text generation with a KV cache: greedy, sampling with temperature, top-k, top-p, or
// beam search; transformers' logits processors for repeated tokens and n-grams, banned,
// biased and suppressed tokens, minimum lengths and forced first and last tokens.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "peft/model.h"

namespace at {
class Generator;
}

namespace peft {

struct GenerationConfig {
  int64_t max_new_tokens = 32;
  bool do_sample = false;       // false: greedy (argmax)
  double temperature = 1.0;     // sampling only
  int64_t top_k = 0;            // 0: off
  double top_p = 1.0;           // 1: off
  double min_p = 0.0;           // drops tokens below min_p x the top token's probability; 0: off
  uint64_t seed = 0;            // sampling is reproducible for a given seed
  std::vector<int64_t> eos_token_ids;  // a row stops after producing one of these
  int64_t pad_token_id = 0;     // fills finished rows and left padding
  // Encoder-decoder models: the first generated token is forced to this id (mBART-50's target
  // language, as transformers' ForcedBOSTokenLogitsProcessor); -1: off.
  int64_t forced_bos_token_id = -1;

  // Beam search (transformers' beam search, not sampled): num_beams hypotheses per prompt,
  // the best finished one returned. 1: off.
  int64_t num_beams = 1;
  // Answers per prompt, consecutive in the output: the best of the beams (<= num_beams), or
  // independent draws (sampling; each prompt repeated, as transformers expands it). Greedy
  // decoding has one.
  int64_t num_return_sequences = 1;
  // A finished hypothesis scores its summed log-probabilities / (generated length ^
  // length_penalty): > 0 favours longer ones.
  double length_penalty = 1.0;
  // When beam search stops: kHeuristic (transformers' early_stopping=False) once no running
  // beam is likely to beat the finished ones; kFinished (True) as soon as num_beams
  // hypotheses have finished; kNever ("never") once none can, the canonical search.
  enum class EarlyStopping { kHeuristic, kFinished, kNever };
  EarlyStopping early_stopping = EarlyStopping::kHeuristic;

  // Logits processors, applied in transformers' order before a token is chosen. The length
  // they count is the row's whole sequence as transformers' input_ids: the padded prompt
  // (decoder-only) or decoder_start (encoder-decoder) plus the tokens generated so far.
  int64_t no_repeat_ngram_size = 0;  // > 0: an n-gram of this size never occurs twice
  int64_t min_length = 0;            // EOS tokens are impossible while the sequence is shorter
  int64_t min_new_tokens = 0;        // EOS tokens are impossible before this many new tokens
  // The last token when max_new_tokens is reached (transformers' forced_eos_token_id; BART's
  // configs set it); empty: off.
  std::vector<int64_t> forced_eos_token_ids;
  // A token already in the sequence (the prompt's padding not counted) has its score divided
  // by this, or multiplied where negative: > 1 discourages repeats. 1: off.
  double repetition_penalty = 1.0;
  // Token sequences never generated: a single token is banned outright, a longer sequence's
  // last token where the row ends with the rest (an EOS token alone is never banned).
  std::vector<std::vector<int64_t>> bad_words_ids;
  // Added to a sequence's last token's score where the row ends with the rest of it.
  std::vector<std::pair<std::vector<int64_t>, double>> sequence_bias;
  std::vector<int64_t> suppress_tokens;        // never generated
  std::vector<int64_t> begin_suppress_tokens;  // not generated first (after a forced BOS: second)

  void validate() const;  // throws naming the first out-of-range setting
};

// A model's generation defaults as transformers' from_pretrained makes them: the folder's
// generation_config.json where there is one, else the model config's generation keys
// (eos_token_id, forced_bos_token_id, forced_eos_token_id; for a GGUF file, those it
// converts). The sampling settings (temperature, top_k, top_p, min_p) are read with
// transformers' defaults for those the file leaves out (top_k 50), but do_sample is not:
// decoding stays deterministic unless the caller asks to sample. A known key of the wrong
// type or range is an error naming the file and key. An encoder-decoder's max_length
// counts decoder_start (max_new_tokens = max_length - 1); a decoder-only model's depends on
// the prompt, so it is not read. num_return_sequences is read with beams (their best answers); without, it asks
// for sampled answers and is not applied. The keys of generation_config.json that would
// change transformers' output but are not applied here (e.g. encoder_repetition_penalty,
// num_return_sequences without beams, and do_sample itself) are listed in `not_applied`
// when it is given.
GenerationConfig generation_defaults(Model& model, const std::string& model_path,
                                     std::vector<std::string>* not_applied = nullptr);

// Overrides `g` with arguments named as transformers' generate(**kwargs) and
// generation_config.json name them (max_new_tokens, do_sample, temperature, num_beams,
// eos_token_id, ...), plus seed, as the Python binding's generate() takes them. null resets
// an id list (eos_token_id: None stops nowhere); max_length is for encoder-decoders only.
// Asked to sample without num_beams, the model's beams give way. An unknown or unsupported
// key, a value of the wrong type or out of range throws naming `where` and the key.
void apply_generation_kwargs(Model& model, const nlohmann::json& kwargs, const std::string& where,
                             GenerationConfig& g);

// What a server takes from a model folder for the requests that leave it out, as vLLM's
// --generation-config auto: the sampling keys generation_config.json sets (unset: the API's
// own defaults apply), and the stop ids transformers' generate() would use.
struct ServingDefaults {
  std::optional<double> temperature, top_p, min_p, repetition_penalty;
  std::optional<int64_t> top_k, max_new_tokens;
  std::vector<int64_t> eos_token_ids;
  std::string describe() const;  // "temperature 0.7, top_p 0.8": the sampling keys set, or ""
};
ServingDefaults serving_defaults(Model& model, const std::string& model_path);

// The next token for each row of logits [rows, vocab] (float): argmax, or a draw after
// temperature, top-k, top-p and min-p (transformers' order) when cfg.do_sample.
at::Tensor next_tokens(const at::Tensor& logits, const GenerationConfig& cfg, at::Generator& gen);

// Continues each prompt (ragged; left-padded internally, positions counted from each
// row's first real token, as transformers' generate does). Returns, per row, the prompt
// followed by the generated tokens, up to and including an EOS token.
std::vector<std::vector<int64_t>> generate(Model& model, const std::vector<std::vector<int64_t>>& prompts,
                                           const GenerationConfig& cfg);

}  // namespace peft
