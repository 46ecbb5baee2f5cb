// Generation for encoder-decoder models: the encoder runs once over the padded prompts,
// the decoder starts from decoder_start_token_id and extends its cache one token a step;
// cross-attention keys and values are computed on the first step and kept.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <limits>
#include <stdexcept>

#include "generate_rows.h"
#include "serve/beam_search.h"
#include "peft/seq2seq.h"

namespace peft {

namespace {

// An encoder-decoder decoding with its cache: the encoder runs on the first step, its
// output and the cross-attention keys and values are reused after it.
class Seq2SeqSteps : public BeamModel {
 public:
  Seq2SeqSteps(Seq2SeqLM& model, const at::Tensor& ids, const at::Tensor& mask, int64_t decoder_start)
      : model_(model) {
    in_.input_ids = ids;
    in_.attention_mask = mask;
    in_.decoder_input_ids = at::full({ids.size(0), 1}, decoder_start, ids.options());
    in_.cache = &cache_;
  }

  at::Tensor prefill() { return last_logits(); }

  at::Tensor next_logits(const at::Tensor& tokens) override {
    in_.decoder_input_ids = tokens.to(in_.input_ids.device()).unsqueeze(1);
    return last_logits();
  }

  void reorder(const at::Tensor& rows) override {
    const auto r = rows.to(in_.input_ids.device());
    auto select = [&r](at::Tensor& t) {
      if (t.defined()) t = t.index_select(0, r);
    };
    for (auto* list : {&cache_.self_attn.keys, &cache_.self_attn.values, &cache_.cross_keys, &cache_.cross_values})
      for (auto& t : *list) select(t);
    select(in_.input_ids);
    select(in_.attention_mask);
    select(in_.encoder_hidden_states);
  }

 private:
  at::Tensor last_logits() {
    const auto o = model_.forward_seq2seq(in_);
    if (!in_.encoder_hidden_states.defined()) in_.encoder_hidden_states = o.encoder_last_hidden_state;
    return o.logits.select(1, -1).to(at::kFloat);
  }

  Seq2SeqLM& model_;
  Seq2SeqCache cache_;
  Seq2SeqInputs in_;
};

}  // namespace

std::vector<std::vector<int64_t>> generate_seq2seq(Model& model, const std::vector<std::vector<int64_t>>& prompts,
                                                   const GenerationConfig& cfg) {
  Seq2SeqLM* s2s = as_seq2seq(model);
  if (!s2s) throw std::invalid_argument(model.type_name() + " is not an encoder-decoder model");
  if (prompts.empty()) return {};
  cfg.validate();
  c10::InferenceMode guard;
  GeneratedRows rows(prompts, cfg);
  if (cfg.max_new_tokens == 0) return rows.take();  // nothing to run the model for
  const int64_t b = rows.rows();
  // On the right, as T5's tokenizer pads (the encoder's mask hides it, whatever the side).
  auto [ids, mask, left_pad] = pad_prompts(prompts, s2s->pad_token_id(), /*left=*/false);
  const at::Device device = model.device();
  const int64_t start = s2s->decoder_start_token_id();
  if (cfg.num_beams > 1) {
    // Each prompt's beams are consecutive rows, as transformers expands them.
    ids = ids.repeat_interleave(cfg.num_beams, 0);
    mask = mask.repeat_interleave(cfg.num_beams, 0);
    Seq2SeqSteps steps(*s2s, ids.to(device), mask.to(device), start);
    const auto first = steps.prefill();
    return rows.extend_all(beam_search(steps, first, at::full({ids.size(0), 1}, start, at::kLong), cfg));
  }
  Seq2SeqSteps steps(*s2s, ids.to(device), mask.to(device), start);
  GreedyLoop loop(rows, at::full({b, 1}, start, at::kLong), cfg);
  auto logits = steps.prefill();
  while (auto next = loop.step(logits)) logits = steps.next_logits(*next);
  return rows.take();
}

}  // namespace peft
