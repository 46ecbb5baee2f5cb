// Text generation with a KV cache: greedy, or sampling with temperature, top-k, top-p.
#pragma once

#include <cstdint>
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
  uint64_t seed = 0;            // sampling is reproducible for a given seed
  std::vector<int64_t> eos_token_ids;  // a row stops after producing one of these
  int64_t pad_token_id = 0;     // fills finished rows and left padding
  // Encoder-decoder models: the first generated token is forced to this id (mBART-50's target
  // language, as transformers' ForcedBOSTokenLogitsProcessor); -1: off.
  int64_t forced_bos_token_id = -1;

  void validate() const;  // throws naming the first out-of-range setting
};

// The next token for each row of logits [rows, vocab] (float): argmax, or a draw after
// temperature, top-k and top-p (transformers' order) when cfg.do_sample.
at::Tensor next_tokens(const at::Tensor& logits, const GenerationConfig& cfg, at::Generator& gen);

// Continues each prompt (ragged; left-padded internally, positions counted from each
// row's first real token, as transformers' generate does). Returns, per row, the prompt
// followed by the generated tokens, up to and including an EOS token.
std::vector<std::vector<int64_t>> generate(Model& model, const std::vector<std::vector<int64_t>>& prompts,
                                           const GenerationConfig& cfg);

}  // namespace peft
