// Beam search as transformers' generate() runs it (GenerationMixin._beam_search, vectorized
// since transformers 4.50): per prompt, num_beams running hypotheses; each step keeps the
// best (1 + EOS ids, at least 2) x num_beams continuations by summed log-probability,
// moves those that end (an EOS token, or the length limit) among the top num_beams into a
// set of num_beams finished ones scored with the length penalty, and runs on with the best
// num_beams that did not end, until early_stopping says no running one can win.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "peft/generate.h"

namespace peft {

// The model side of the search: a decoder with a cache over batch * num_beams rows.
class BeamModel {
 public:
  virtual ~BeamModel() = default;
  // Logits [rows, vocab] for the position after `tokens` [rows] (CPU int64), each row's
  // newest token; the cache grows by one position.
  virtual at::Tensor next_logits(const at::Tensor& tokens) = 0;
  // Row i of every per-row state (the cache, masks, positions) becomes former row rows[i].
  virtual void reorder(const at::Tensor& rows) = 0;
};

// Searches from `sequences` [batch * num_beams, prompt_len] (CPU int64: the rows as the
// model has read them, each prompt's num_beams rows together, as transformers' input_ids)
// and `first_logits` [batch * num_beams, vocab], the logits after them; `left_pad`
// [batch * num_beams] (CPU int64; undefined: none) counts each row's padding columns at the
// start. Returns per prompt its cfg.num_return_sequences best finished hypotheses' new
// tokens (best first; each prompt's together), each ending with its EOS token where it has one.
std::vector<std::vector<int64_t>> beam_search(BeamModel& model, const at::Tensor& first_logits,
                                              const at::Tensor& sequences, const GenerationConfig& cfg,
                                              const at::Tensor& left_pad = {});

}  // namespace peft
