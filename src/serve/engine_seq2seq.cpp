// The serving engine's steps for encoder-decoder models. A request's prompt runs through the
// encoder once, at prefill, together with the other newcomers; its decoder then starts from
// decoder_start_token_id. Running rows share one decoder self-attention cache, left-padded
// as a decoder-only batch's is, so each row feeds its own position ids; the encoder's output
// and the cross-attention keys and values stay with the row until it finishes.
#include <ATen/ATen.h>

#include <algorithm>
#include <stdexcept>
#include <string>

#include "peft/layers.h"
#include "peft/seq2seq.h"
#include "serve/engine_rows.h"
#include "serve/generate_rows.h"

namespace peft {

namespace {
// Right-pads dimension `dim` of t to `len` with zeros.
at::Tensor right_pad(const at::Tensor& t, int64_t dim, int64_t len) {
  const int64_t pad = len - t.size(dim);
  if (pad <= 0) return t;
  auto sizes = t.sizes().vec();
  sizes[dim] = pad;
  return at::cat({t, at::zeros(sizes, t.options())}, dim);
}
}  // namespace

void Engine::EncoderRows::append(EncoderRows fresh) {
  if (empty()) {
    *this = std::move(fresh);
    return;
  }
  const int64_t src = std::max(mask.size(1), fresh.mask.size(1));
  auto join = [src](const at::Tensor& a, const at::Tensor& b, int64_t dim) {
    return at::cat({right_pad(a, dim, src), right_pad(b, dim, src)}, 0);
  };
  states = join(states, fresh.states, 1);
  mask = join(mask, fresh.mask, 1);
  for (size_t l = 0; l < cross_keys.size(); ++l) {
    cross_keys[l] = join(cross_keys[l], fresh.cross_keys[l], 2);
    cross_values[l] = join(cross_values[l], fresh.cross_values[l], 2);
  }
}

void Engine::EncoderRows::keep(const at::Tensor& rows) {
  mask = mask.index_select(0, rows);
  // Through the last source position a remaining row uses.
  const auto used = mask.any(0);
  const int64_t src = mask.size(1) - used.flip(0).to(at::kLong).argmax().item<int64_t>();
  mask = mask.narrow(1, 0, src);
  states = states.index_select(0, rows).narrow(1, 0, src);
  for (size_t l = 0; l < cross_keys.size(); ++l) {
    cross_keys[l] = cross_keys[l].index_select(0, rows).narrow(2, 0, src);
    cross_values[l] = cross_values[l].index_select(0, rows).narrow(2, 0, src);
  }
}

void Engine::check_seq2seq_lengths(const ServeRequest& r) const {
  const auto n = static_cast<int64_t>(r.prompt.size());
  if (context_ > 0 && n > context_)
    throw std::invalid_argument("the prompt (" + std::to_string(n) + " tokens) exceeds the encoder's " +
                                std::to_string(context_) + " positions");
  if (target_positions_ > 0 && r.gen.max_new_tokens + 1 > target_positions_)
    throw std::invalid_argument("max_tokens (" + std::to_string(r.gen.max_new_tokens) +
                                ") plus the decoder's start token exceeds the decoder's " +
                                std::to_string(target_positions_) + " positions");
}

// The newcomers' prompts through the encoder (right-padded, as the tokenizers pad) and
// their decoders' first step, in one forward with each row's adapter.
void Engine::prefill_seq2seq(std::vector<std::unique_ptr<Running>>& fresh) {
  const at::Device dev = peft_.model().device();
  const auto k = static_cast<int64_t>(fresh.size());
  const auto padded = pad_prompts(prompts_of(fresh), as_seq2seq(peft_.model())->pad_token_id(), /*left=*/false);
  Seq2SeqCache cache;
  Seq2SeqInputs in;
  in.input_ids = padded.ids.to(dev);
  in.attention_mask = padded.mask.to(dev);
  in.decoder_input_ids = at::full({k, 1}, decoder_start_, at::TensorOptions(at::kLong).device(dev));
  in.cache = &cache;
  const auto out = peft_.forward_mixed(in, peft_.mixed_batch(adapters_of(fresh)));
  for (auto& r : fresh) r->position = 1;  // decoder_start took position 0
  const auto keep = emit_first(fresh, out.logits.select(1, -1).to(at::kFloat));
  if (keep.empty()) return;
  EncoderRows enc{out.encoder_last_hidden_state, in.attention_mask, cache.cross_keys, cache.cross_values};
  enc.keep(at::tensor(keep, at::kLong).to(dev));
  encoder_->append(std::move(enc));
  append_rows(cache.self_attn, at::ones({k, 1}, in.attention_mask.options()), fresh, keep);
}

// The decoder's step for the running rows, each at its own position and with its own
// adapter, over its encoder's output. The self-attention rows move into the decoder's cache
// for the step and back after it, whatever happens.
at::Tensor Engine::decode_seq2seq(const at::Tensor& ids, const at::Tensor& positions) {
  Seq2SeqCache cache;
  cache.self_attn = std::move(cache_);
  struct MoveBack {
    KVCache& to;
    KVCache& from;
    ~MoveBack() { to = std::move(from); }
  } back{cache_, cache.self_attn};
  cache.cross_keys = encoder_->cross_keys;
  cache.cross_values = encoder_->cross_values;
  Seq2SeqInputs in;
  in.attention_mask = encoder_->mask;
  in.encoder_hidden_states = encoder_->states;
  in.decoder_input_ids = ids;
  in.decoder_position_ids = positions;
  in.decoder_attention_mask = mask_;
  in.cache = &cache;
  return peft_.forward_mixed(in, *mixed_).logits.select(1, -1).to(at::kFloat);
}

}  // namespace peft
