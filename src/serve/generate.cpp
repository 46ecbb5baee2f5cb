#include "peft/generate.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>

#include <cmath>
#include <stdexcept>
#include <string>

#include "generate_rows.h"
#include "serve/beam_search.h"
#include "serve/logits_processors.h"
#include "peft/seq2seq.h"
#include "util/mask_positions.h"

namespace peft {

namespace {

constexpr int64_t kMaxBeams = 256;   // each beam is a row of the batch: beyond this, a typo
constexpr int64_t kMaxNgram = 1024;

// Filters logits [b, vocab] in transformers' order: temperature, top-k, top-p, min-p.
at::Tensor warp(at::Tensor logits, const GenerationConfig& cfg) {
  if (cfg.temperature <= 0) throw std::invalid_argument("temperature must be > 0 when sampling");
  logits = logits / cfg.temperature;
  const double neg_inf = -std::numeric_limits<double>::infinity();
  if (cfg.top_k > 0 && cfg.top_k < logits.size(-1)) {
    auto kth = std::get<0>(logits.topk(cfg.top_k, -1)).narrow(-1, cfg.top_k - 1, 1);
    logits = logits.masked_fill(logits < kth, neg_inf);
  }
  if (cfg.top_p < 1.0) {
    auto [sorted, idx] = logits.sort(-1, /*descending=*/false);
    auto cum = sorted.softmax(-1).cumsum(-1);
    auto remove = cum <= (1.0 - cfg.top_p);
    remove.select(-1, remove.size(-1) - 1).fill_(false);  // keep at least the best token
    logits = logits.masked_fill(remove.scatter(-1, idx, remove), neg_inf);
  }
  if (cfg.min_p > 0) {  // the top token is never below min_p (<= 1) times itself: one is kept
    const auto probs = logits.softmax(-1);
    logits = logits.masked_fill(probs < probs.amax(-1, true) * cfg.min_p, neg_inf);
  }
  return logits;
}

}  // namespace

PaddedPrompts pad_prompts(const std::vector<std::vector<int64_t>>& prompts, int64_t pad, bool left) {
  const auto b = static_cast<int64_t>(prompts.size());
  int64_t len = 0;
  for (const auto& p : prompts) len = std::max<int64_t>(len, static_cast<int64_t>(p.size()));
  PaddedPrompts out{at::full({b, len}, pad, at::kLong), at::zeros({b, len}, at::kLong), at::zeros({b}, at::kLong)};
  for (int64_t i = 0; i < b; ++i) {
    const auto n = static_cast<int64_t>(prompts[i].size());
    const int64_t first = left ? len - n : 0;
    out.ids[i].narrow(0, first, n).copy_(at::tensor(prompts[i], at::kLong));
    out.mask[i].narrow(0, first, n).fill_(1);
    out.left_pad[i] = first;
  }
  return out;
}

GeneratedRows::GeneratedRows(const std::vector<std::vector<int64_t>>& prompts, const GenerationConfig& cfg)
    : cfg_(cfg), out_(prompts), done_(prompts.size(), false) {
  for (const auto& p : prompts)
    if (p.empty()) throw std::invalid_argument("generate: empty prompt");
}

bool GeneratedRows::append(at::Tensor& next) {
  auto acc = next.accessor<int64_t, 1>();
  bool all_done = true;
  for (int64_t i = 0; i < rows(); ++i) {
    if (done_[i]) {
      acc[i] = cfg_.pad_token_id;
      continue;
    }
    out_[i].push_back(acc[i]);
    for (auto e : cfg_.eos_token_ids)
      if (acc[i] == e) done_[i] = true;
    all_done = all_done && done_[i];
  }
  return all_done;
}

std::vector<std::vector<int64_t>> GeneratedRows::extend_all(const std::vector<std::vector<int64_t>>& tails) {
  const size_t per = tails.size() / out_.size();
  std::vector<std::vector<int64_t>> rows;
  for (size_t i = 0; i < tails.size(); ++i) {
    rows.push_back(out_[i / per]);
    rows.back().insert(rows.back().end(), tails[i].begin(), tails[i].end());
  }
  return rows;
}

GreedyLoop::GreedyLoop(GeneratedRows& rows, const at::Tensor& sequences, const GenerationConfig& cfg,
                       const at::Tensor& left_pad)
    : rows_(rows),
      cfg_(cfg),
      sequences_(sequences),
      left_pad_(left_pad),
      prompt_len_(sequences.size(1)),
      gen_(at::detail::createCPUGenerator(cfg.seed)) {}

std::optional<at::Tensor> GreedyLoop::step(const at::Tensor& logits) {
  if (made_ >= cfg_.max_new_tokens) return std::nullopt;
  at::Tensor next = next_tokens(process_logits(logits, sequences_, prompt_len_, cfg_, left_pad_), cfg_, gen_);
  const bool all_done = rows_.append(next);  // finished rows' entries become the pad id
  // The processors read the rows as transformers' input_ids: pads after a row's EOS included.
  if (has_logits_processors(cfg_)) sequences_ = at::cat({sequences_, next.unsqueeze(1)}, 1);
  if (all_done || ++made_ >= cfg_.max_new_tokens) return std::nullopt;
  return next;
}

at::Tensor next_tokens(const at::Tensor& logits, const GenerationConfig& cfg, at::Generator& gen) {
  if (!cfg.do_sample) return logits.argmax(-1).cpu();
  auto probs = warp(logits, cfg).softmax(-1).cpu();
  return at::multinomial(probs, 1, false, gen).squeeze(-1);
}

void GenerationConfig::validate() const {
  auto bad = [](const std::string& m) { throw std::invalid_argument(m); };
  if (max_new_tokens < 0 || max_new_tokens > (int64_t{1} << 24))
    bad("max_new_tokens must be between 0 and 16777216, got " + std::to_string(max_new_tokens));
  if (!(temperature > 0) || !std::isfinite(temperature)) bad("temperature must be a finite number > 0");
  if (top_k < 0) bad("top_k must be >= 0 (0: off), got " + std::to_string(top_k));
  if (!(top_p > 0 && top_p <= 1)) bad("top_p must be in (0, 1] (1: off)");
  if (!(min_p >= 0 && min_p <= 1)) bad("min_p must be in [0, 1] (0: off)");
  // Every list of token ids: ids are >= 0 (the vocabulary's end is the model's to check).
  auto token_ids = [&](const std::vector<int64_t>& ids, const char* what) {
    for (int64_t id : ids)
      if (id < 0) bad(std::string(what) + " must hold token ids >= 0, got " + std::to_string(id));
  };
  token_ids(eos_token_ids, "eos_token_id");
  if (pad_token_id < 0) bad("pad_token_id must be >= 0");
  if (forced_bos_token_id < -1) bad("forced_bos_token_id must be a token id or -1 (off)");
  token_ids(forced_eos_token_ids, "forced_eos_token_id");
  if (num_beams < 1 || num_beams > kMaxBeams)
    bad("num_beams must be between 1 and " + std::to_string(kMaxBeams) + ", got " + std::to_string(num_beams));
  if (num_beams > 1 && do_sample) bad("num_beams > 1 searches; it cannot be combined with sampling");
  if (num_return_sequences < 1 || num_return_sequences > kMaxBeams)
    bad("num_return_sequences must be between 1 and " + std::to_string(kMaxBeams) + ", got " +
        std::to_string(num_return_sequences));
  if (num_return_sequences > 1 && num_beams == 1 && !do_sample)
    bad("num_return_sequences > 1 needs sampling or beam search (greedy decoding has one answer)");
  if (num_beams > 1 && num_return_sequences > num_beams)
    bad("num_return_sequences (" + std::to_string(num_return_sequences) + ") must be <= num_beams (" +
        std::to_string(num_beams) + ")");
  if (!std::isfinite(length_penalty)) bad("length_penalty must be a finite number");
  if (no_repeat_ngram_size < 0 || no_repeat_ngram_size > kMaxNgram)
    bad("no_repeat_ngram_size must be between 0 and " + std::to_string(kMaxNgram) + ", got " +
        std::to_string(no_repeat_ngram_size));
  if (min_length < 0) bad("min_length must be >= 0, got " + std::to_string(min_length));
  if (min_new_tokens < 0) bad("min_new_tokens must be >= 0, got " + std::to_string(min_new_tokens));
  if (!(repetition_penalty > 0) || !std::isfinite(repetition_penalty))
    bad("repetition_penalty must be a finite number > 0 (1: off)");
  auto token_sequence = [&](const std::vector<int64_t>& ids, const char* what) {
    if (ids.empty()) bad(std::string(what) + " holds an empty token sequence");
    token_ids(ids, what);
  };
  for (const auto& seq : bad_words_ids) token_sequence(seq, "bad_words_ids");
  for (const auto& [seq, b] : sequence_bias) {
    token_sequence(seq, "sequence_bias");
    if (std::isnan(b) || b > 0 && std::isinf(b)) bad("sequence_bias biases must be numbers below +inf");
  }
  token_ids(suppress_tokens, "suppress_tokens");
  token_ids(begin_suppress_tokens, "begin_suppress_tokens");
}

namespace {

// A causal LM decoding with its KV cache: the left-padded prompts first, then one token a
// row per step, positions counted from each row's first real token.
class CausalSteps : public BeamModel {
 public:
  CausalSteps(Model& model, const at::Tensor& ids, const at::Tensor& mask) : model_(model), mask_(mask) {
    in_.input_ids = ids;
    in_.attention_mask = mask;
    in_.position_ids = positions_from_mask(mask);
    in_.cache = &cache_;
  }

  at::Tensor prefill() { return last_logits(); }

  at::Tensor next_logits(const at::Tensor& tokens) override {
    const auto device = mask_.device();
    in_.input_ids = tokens.to(device).unsqueeze(1);
    mask_ = at::cat({mask_, at::ones({mask_.size(0), 1}, mask_.options())}, 1);
    in_.attention_mask = mask_;
    in_.position_ids = in_.position_ids.select(1, -1).unsqueeze(1) + 1;
    return last_logits();
  }

  void reorder(const at::Tensor& rows) override {
    const auto r = rows.to(mask_.device());
    for (auto* kv : {&cache_.keys, &cache_.values})
      for (auto& t : *kv)
        if (t.defined()) t = t.index_select(0, r);
    mask_ = mask_.index_select(0, r);
    in_.position_ids = in_.position_ids.index_select(0, r);
  }

 private:
  at::Tensor last_logits() { return model_.forward(in_).logits.select(1, -1).to(at::kFloat); }

  Model& model_;
  KVCache cache_;
  ModelInputs in_;
  at::Tensor mask_;
};

}  // namespace

std::vector<std::vector<int64_t>> generate(Model& model, const std::vector<std::vector<int64_t>>& prompts,
                                           const GenerationConfig& cfg) {
  if (cfg.num_return_sequences > 1 && cfg.num_beams == 1) {
    // Sampled answers: each prompt repeated, its rows consecutive, as transformers expands them.
    cfg.validate();
    GenerationConfig one = cfg;
    one.num_return_sequences = 1;
    std::vector<std::vector<int64_t>> repeated;
    for (const auto& p : prompts) repeated.insert(repeated.end(), cfg.num_return_sequences, p);
    return generate(model, repeated, one);
  }
  if (as_seq2seq(model)) return generate_seq2seq(model, prompts, cfg);  // T5: encoder input, decoder output
  if (model.task() != TaskKind::kCausalLM)
    throw std::invalid_argument(model.type_name() + " is not a causal LM; it cannot generate");
  if (prompts.empty()) return {};
  cfg.validate();
  c10::InferenceMode guard;
  GeneratedRows rows(prompts, cfg);
  if (cfg.max_new_tokens == 0) return rows.take();  // nothing to run the model for
  at::Device device = model.device();
  auto [ids, mask, left_pad] = pad_prompts(prompts, cfg.pad_token_id, /*left=*/true);
  if (cfg.num_beams > 1) {
    // Each prompt's beams are consecutive rows, as transformers expands them.
    ids = ids.repeat_interleave(cfg.num_beams, 0);
    mask = mask.repeat_interleave(cfg.num_beams, 0);
    CausalSteps steps(model, ids.to(device), mask.to(device));
    const auto first = steps.prefill();
    return rows.extend_all(beam_search(steps, first, ids, cfg, left_pad.repeat_interleave(cfg.num_beams, 0)));
  }
  CausalSteps steps(model, ids.to(device), mask.to(device));
  GreedyLoop loop(rows, ids, cfg, left_pad);
  auto logits = steps.prefill();
  while (auto next = loop.step(logits)) logits = steps.next_logits(*next);
  return rows.take();
}

}  // namespace peft
