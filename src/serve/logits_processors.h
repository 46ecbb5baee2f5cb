// transformers' logits processors that GenerationConfig names, applied in transformers'
// order (SequenceBias, RepetitionPenalty, NoRepeatNGram, NoBadWords, MinLength,
// MinNewTokensLength, ForcedBOSToken, ForcedEOSToken, SuppressTokens,
// SuppressTokensAtBegin) by greedy, sampled and beam-search generation alike.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "peft/generate.h"

namespace peft {

// True when cfg asks for any of them (else process_logits returns scores unchanged).
bool has_logits_processors(const GenerationConfig& cfg);

// scores [rows, vocab] float (logits; log-probabilities in beam search) for the token after
// `sequences` [rows, cur_len] (CPU int64: each row's whole sequence so far, what
// transformers calls input_ids), whose first `prompt_len` columns are the prompt.
// `left_pad` [rows] (CPU int64; undefined: none) counts each row's padding columns at the
// start, which the repetition penalty does not count (transformers reads them from the
// attention mask). Returns the processed scores (a forbidden token gets -inf; a forced one
// 0 and all others -inf). Throws naming the setting when a token it names is outside the
// vocabulary.
at::Tensor process_logits(at::Tensor scores, const at::Tensor& sequences, int64_t prompt_len,
                          const GenerationConfig& cfg, const at::Tensor& left_pad = {});

}  // namespace peft
