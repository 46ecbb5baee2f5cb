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
#include "peft/seq2seq.h"

namespace peft {

std::vector<std::vector<int64_t>> generate_seq2seq(Model& model, const std::vector<std::vector<int64_t>>& prompts,
                                                   const GenerationConfig& cfg) {
  Seq2SeqLM* s2s = as_seq2seq(model);
  if (!s2s) throw std::invalid_argument(model.type_name() + " is not an encoder-decoder model");
  if (prompts.empty()) return {};
  cfg.validate();
  c10::InferenceMode guard;
  GeneratedRows rows(prompts, cfg);
  const int64_t b = rows.rows(), len = rows.longest_prompt();
  // Relative positions make the side of the padding irrelevant; right, as T5's tokenizer pads.
  auto ids = at::full({b, len}, s2s->pad_token_id(), at::kLong);
  auto mask = at::zeros({b, len}, at::kLong);
  for (int64_t i = 0; i < b; ++i) {
    const int64_t n = static_cast<int64_t>(prompts[i].size());
    ids[i].narrow(0, 0, n).copy_(at::tensor(prompts[i], at::kLong));
    mask[i].narrow(0, 0, n).fill_(1);
  }
  const at::Device device = model.device();
  Seq2SeqCache cache;
  Seq2SeqInputs in;
  in.input_ids = ids.to(device);
  in.attention_mask = mask.to(device);
  in.decoder_input_ids = at::full({b, 1}, s2s->decoder_start_token_id(), at::kLong).to(device);
  in.cache = &cache;

  auto gen = at::detail::createCPUGenerator(cfg.seed);
  for (int64_t step = 0; step < cfg.max_new_tokens; ++step) {
    const auto o = s2s->forward_seq2seq(in);
    if (!in.encoder_hidden_states.defined()) in.encoder_hidden_states = o.encoder_last_hidden_state;
    at::Tensor logits = o.logits.select(1, -1).to(at::kFloat);
    if (step == 0 && cfg.forced_bos_token_id >= 0) {
      // Every other token is made impossible, so sampling still draws (as transformers').
      if (cfg.forced_bos_token_id >= logits.size(-1))
        throw std::invalid_argument("forced_bos_token_id " + std::to_string(cfg.forced_bos_token_id) +
                                    " is outside the vocabulary of " + std::to_string(logits.size(-1)));
      auto forced = at::full_like(logits, -std::numeric_limits<float>::infinity());
      forced.select(1, cfg.forced_bos_token_id).copy_(logits.select(1, cfg.forced_bos_token_id));
      logits = forced;
    }
    at::Tensor next = next_tokens(logits, cfg, gen);
    if (rows.append(next)) break;
    in.decoder_input_ids = next.to(device).unsqueeze(1);
  }
  return rows.take();
}

}  // namespace peft
