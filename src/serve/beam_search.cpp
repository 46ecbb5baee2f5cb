#include "serve/beam_search.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "serve/logits_processors.h"

namespace peft {

namespace {

constexpr double kWorst = -1.0e9;  // transformers' score for "not a candidate"
constexpr int64_t kMaxSlots = int64_t{1} << 25;  // candidates x positions

// transformers' _gather_beams: t[b, indices[b, j], ...] for each b, j.
at::Tensor gather_beams(const at::Tensor& t, at::Tensor indices) {
  while (indices.dim() < t.dim()) indices = indices.unsqueeze(-1);
  return at::take_along_dim(t, indices, 1);
}

at::Tensor flatten_beams(const at::Tensor& t) {
  auto shape = t.sizes().vec();
  shape[1] *= shape[0];
  shape.erase(shape.begin());
  return t.reshape(shape);
}

// The search's state and steps, named as transformers' (prompts B, beams K, candidates
// C, length L; `prompt` columns of it before the first new token).
class Search {
 public:
  Search(const at::Tensor& prompt_rows, const GenerationConfig& cfg, const at::Tensor& left_pad);
  // Steps c-f of transformers' loop for the logits after position cur - 1.
  void advance(const at::Tensor& logits, int64_t cur);
  // Step g's stopping test after position cur was filled.
  bool done(int64_t cur);
  at::Tensor rows_kept(int64_t cur) const {  // the flat row each running beam came from
    return running_indices.select(2, cur - prompt).reshape({-1}).to(at::kLong);
  }
  at::Tensor last_tokens(int64_t cur) const { return running.select(2, cur).reshape({-1}).contiguous(); }
  std::vector<std::vector<int64_t>> best(int64_t n) const;

 private:
  void keep_finished(const at::Tensor& top_lp, const at::Tensor& top_running, const at::Tensor& top_indices,
                     int64_t cur);

  const GenerationConfig& cfg;
  int64_t B, K, C, L, prompt;
  at::Tensor left_pad;  // [B * K] each row's padding columns (beams of a prompt share it)
  at::Tensor eos, in_top_k;
  at::Tensor running;          // [B, K, L] the running hypotheses' tokens
  at::Tensor running_scores;   // [B, K] their summed log-probabilities
  at::Tensor running_indices;  // [B, K, L - prompt] the flat row each step's token came from
  at::Tensor sequences;        // [B, K, L] the finished hypotheses, best first
  at::Tensor scores;           // [B, K] their length-penalized scores
  at::Tensor indices;          // [B, K, L - prompt]
  at::Tensor finished;         // [B, K] which of `sequences` are real
  at::Tensor may_improve;      // [B, 1] the early-stop heuristic is not yet satisfied
  at::Tensor hits;             // [B, C] this step's candidates that ended
};

Search::Search(const at::Tensor& prompt_rows, const GenerationConfig& cfg, const at::Tensor& left_pad)
    : cfg(cfg), left_pad(left_pad) {
  K = cfg.num_beams;
  B = prompt_rows.size(0) / K;
  prompt = prompt_rows.size(1);
  L = prompt + cfg.max_new_tokens;
  // At least one more candidate than EOS ids per beam, so K can always run on.
  C = std::max<int64_t>(2, 1 + static_cast<int64_t>(cfg.eos_token_ids.size())) * K;
  // Every hypothesis is held at full length (as transformers' are): bounded, so a typo in
  // max_new_tokens or num_beams is an error, not an allocation of gigabytes.
  if (static_cast<double>(B) * static_cast<double>(C) * static_cast<double>(L) > kMaxSlots)
    throw std::invalid_argument("beam search over " + std::to_string(B) + " prompts x " + std::to_string(K) +
                                " beams x " + std::to_string(L) + " positions is too large (at most " +
                                std::to_string(kMaxSlots) + " candidate token slots); lower num_beams or max_new_tokens");
  eos = at::tensor(cfg.eos_token_ids.empty() ? std::vector<int64_t>{-1} : cfg.eos_token_ids, at::kLong);
  in_top_k = at::cat({at::ones({K}, at::kBool), at::zeros({C - K}, at::kBool)}).unsqueeze(0);
  running = at::full({B, K, L}, cfg.pad_token_id, at::kLong);
  running.narrow(2, 0, prompt).copy_(prompt_rows.view({B, K, prompt}));
  sequences = running.clone();
  // Only the first beam starts live, so the K beams do not all pick the same tokens.
  running_scores = at::zeros({B, K}, at::kFloat);
  running_scores.narrow(1, 1, K - 1).fill_(kWorst);
  scores = at::full({B, K}, kWorst, at::kFloat);
  finished = at::zeros({B, K}, at::kBool);
  may_improve = at::ones({B, 1}, at::kBool);
  running_indices = at::full({B, K, L - prompt}, -1, at::kInt);
  indices = running_indices.clone();
}

void Search::advance(const at::Tensor& logits, int64_t cur) {
  auto log_probs = at::log_softmax(logits.to(at::kCPU, at::kFloat), -1);
  log_probs = process_logits(log_probs, flatten_beams(running.narrow(2, 0, cur)), prompt, cfg, left_pad);
  const int64_t V = log_probs.size(1);
  log_probs = (log_probs.view({B, K, V}) + running_scores.unsqueeze(2)).reshape({B, K * V});

  // The best C continuations over all beams of each prompt.
  auto [top_lp, top_i] = at::topk(log_probs, C);
  const auto from_beam = at::div(top_i, V, "floor");
  auto top_indices = gather_beams(running_indices, from_beam);
  auto top_running = gather_beams(running, from_beam);
  const auto ids = at::remainder(top_i, V);
  top_running.select(2, cur).copy_(ids);
  top_indices.select(2, cur - prompt).copy_(from_beam + at::arange(B, at::kLong).view({-1, 1}) * K);

  // Which candidates end here: an EOS token, or the length limit.
  hits = at::isin(ids, eos);
  if (cur + 1 >= L) hits.fill_(true);

  // The running beams for the next step: the best K that did not end.
  const auto top_running_lp = top_lp + hits.to(at::kFloat) * kWorst;
  const auto next = std::get<1>(at::topk(top_running_lp, K));
  keep_finished(top_lp, top_running, top_indices, cur);
  running = gather_beams(top_running, next);
  running_scores = gather_beams(top_running_lp, next);
  running_indices = gather_beams(top_indices, next);
}

// Those among the top K candidates that ended join the finished hypotheses, scored with
// the length penalty, where they beat the kept ones and the search still takes them.
void Search::keep_finished(const at::Tensor& top_lp, const at::Tensor& top_running, const at::Tensor& top_indices,
                           int64_t cur) {
  const auto just_finished = hits & in_top_k;
  auto fin = top_lp / std::pow(static_cast<double>(cur + 1 - prompt), cfg.length_penalty);
  const bool stop_when_full = cfg.early_stopping == GenerationConfig::EarlyStopping::kFinished;
  fin = fin + (finished.all(-1, true) & stop_when_full).to(at::kFloat) * kWorst;
  fin = fin + (~may_improve).to(at::kFloat) * kWorst;
  fin = fin + (~just_finished).to(at::kFloat) * kWorst;
  const auto keep = std::get<1>(at::topk(at::cat({scores, fin}, 1), K));
  sequences = gather_beams(at::cat({sequences, top_running}, 1), keep);
  scores = gather_beams(at::cat({scores, fin}, 1), keep);
  indices = gather_beams(at::cat({indices, top_indices}, 1), keep);
  finished = gather_beams(at::cat({finished, just_finished}, 1), keep);
}

bool Search::done(int64_t cur) {
  using ES = GenerationConfig::EarlyStopping;
  // Can a running beam still beat the worst finished one? (transformers' heuristic: the
  // best running score at today's length, or at the longest with "never" and a penalty > 0)
  const int64_t length = (cfg.early_stopping == ES::kNever && cfg.length_penalty > 0 ? L : cur + 1) - prompt;
  const auto best_running = running_scores.narrow(1, 0, 1) / std::pow(static_cast<double>(length), cfg.length_penalty);
  const auto worst_finished =
      at::where(finished, std::get<0>(scores.min(1, true)), at::scalar_tensor(kWorst, at::kFloat));
  may_improve = may_improve & (best_running > worst_finished).any(-1, true);
  const bool improvement_possible = may_improve.any().item<bool>();
  const bool open_beam = !(finished.all().item<bool>() && cfg.early_stopping == ES::kFinished);
  const bool can_continue = !hits.all().item<bool>();
  return !(improvement_possible && open_beam && can_continue);
}

// Each prompt's `n` best finished hypotheses (best first, as transformers keeps them
// sorted), each as long as the steps it was built over.
std::vector<std::vector<int64_t>> Search::best(int64_t n) const {
  std::vector<std::vector<int64_t>> out;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t k = 0; k < n; ++k) {
      const int64_t len = (indices[b][k] != -1).sum().item<int64_t>();
      const auto row = sequences[b][k].narrow(0, prompt, len).contiguous();
      out.emplace_back(row.data_ptr<int64_t>(), row.data_ptr<int64_t>() + len);
    }
  return out;
}

}  // namespace

std::vector<std::vector<int64_t>> beam_search(BeamModel& model, const at::Tensor& first_logits,
                                              const at::Tensor& prompt_rows, const GenerationConfig& cfg,
                                              const at::Tensor& left_pad) {
  Search search(prompt_rows, cfg, left_pad);
  at::Tensor logits = first_logits;
  for (int64_t cur = prompt_rows.size(1), end = cur + cfg.max_new_tokens; cur < end; ++cur) {
    search.advance(logits, cur);
    if (search.done(cur)) break;
    model.reorder(search.rows_kept(cur));
    logits = model.next_logits(search.last_tokens(cur));
  }
  return search.best(cfg.num_return_sequences);
}

}  // namespace peft
