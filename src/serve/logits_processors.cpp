#include "serve/logits_processors.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <limits>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace peft {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

void check_in_vocab(int64_t id, int64_t vocab, const char* setting) {
  if (id >= vocab)
    throw std::invalid_argument(std::string(setting) + " " + std::to_string(id) + " is outside the vocabulary of " +
                                std::to_string(vocab));
}

// Each row's tokens that would complete an n-gram the row already holds (transformers'
// NoRepeatNGramLogitsProcessor): the n-grams whose first n - 1 tokens are the row's last
// n - 1.
void ban_repeated_ngrams(at::Tensor& scores, const at::Tensor& sequences, int64_t n) {
  const int64_t rows = sequences.size(0), len = sequences.size(1);
  if (len < n) return;
  const auto seq = sequences.contiguous();
  const int64_t* ids = seq.data_ptr<int64_t>();
  const int64_t vocab = scores.size(1);
  std::vector<int64_t> ban_rows, ban_ids;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t* row = ids + r * len;
    const int64_t* suffix = row + len - (n - 1);
    for (int64_t start = 0; start + n <= len; ++start) {
      bool match = true;
      for (int64_t k = 0; k + 1 < n && match; ++k) match = row[start + k] == suffix[k];
      const int64_t banned = row[start + n - 1];
      if (!match || banned < 0 || banned >= vocab) continue;
      ban_rows.push_back(r);
      ban_ids.push_back(banned);
    }
  }
  if (ban_rows.empty()) return;
  scores.index_put_({at::tensor(ban_rows, at::kLong).to(scores.device()), at::tensor(ban_ids, at::kLong).to(scores.device())},
                    at::scalar_tensor(kNegInf, scores.options()));
}

// Adds each entry's bias to the scores of its last token, in the rows that end with the
// rest of it (a single token: in every row), as transformers' SequenceBiasLogitsProcessor;
// NoBadWordsLogitsProcessor is the same with a bias of -inf. A sequence given twice keeps
// its first place and its last bias, as transformers' dict of them does.
void add_sequence_bias(at::Tensor& scores, const at::Tensor& sequences,
                       const std::vector<std::pair<std::vector<int64_t>, double>>& entries, const char* setting) {
  std::vector<std::pair<std::vector<int64_t>, float>> unique;
  std::map<std::vector<int64_t>, size_t> seen;
  for (const auto& [seq, b] : entries) {
    auto [it, fresh] = seen.emplace(seq, unique.size());
    if (fresh) unique.emplace_back(seq, static_cast<float>(b));
    else unique[it->second].second = static_cast<float>(b);
  }
  const int64_t rows = sequences.size(0), len = sequences.size(1), vocab = scores.size(1);
  for (const auto& [seq, b] : unique)
    for (int64_t id : seq) check_in_vocab(id, vocab, setting);
  auto bias = at::zeros({rows, vocab}, at::kFloat);
  float* acc = bias.data_ptr<float>();
  for (const auto& [seq, b] : unique)
    if (seq.size() == 1)
      for (int64_t r = 0; r < rows; ++r) acc[r * vocab + seq[0]] = b;
  // Longer ones grouped by length in order of first appearance, as transformers adds them.
  std::vector<size_t> lengths;
  for (const auto& [seq, b] : unique)
    if (seq.size() > 1 && std::find(lengths.begin(), lengths.end(), seq.size()) == lengths.end())
      lengths.push_back(seq.size());
  const auto seqs = sequences.contiguous();
  const int64_t* ids = seqs.data_ptr<int64_t>();
  for (size_t n : lengths) {
    const int64_t prefix = static_cast<int64_t>(n) - 1;
    if (prefix > len) continue;  // longer than the rows so far
    for (const auto& [seq, b] : unique) {
      if (seq.size() != n) continue;
      for (int64_t r = 0; r < rows; ++r)
        if (std::equal(seq.begin(), seq.end() - 1, ids + r * len + len - prefix)) acc[r * vocab + seq.back()] += b;
    }
  }
  scores = scores + bias.to(scores.device());
}

// A token already in the row (its left padding not counted) has its score divided by
// `penalty`, or multiplied where negative (transformers' RepetitionPenaltyLogitsProcessor).
void penalize_repeats(at::Tensor& scores, const at::Tensor& sequences, const at::Tensor& left_pad, double penalty) {
  const int64_t vocab = scores.size(1);
  auto ids = sequences.clamp_max(vocab);  // ids beyond the scores (and padding) go to a spare column
  if (left_pad.defined())
    ids = ids.masked_fill(at::arange(ids.size(1), at::kLong).unsqueeze(0) < left_pad.unsqueeze(1), vocab);
  ids = ids.to(scores.device());
  auto padded = at::constant_pad_nd(scores, {0, 1});
  auto score = padded.gather(1, ids);
  score = at::where(score < 0, score * penalty, score / penalty);
  scores = padded.scatter(1, ids, score).narrow(1, 0, vocab);
}

void forbid(at::Tensor& scores, const std::vector<int64_t>& ids) {
  for (int64_t id : ids)
    if (id < scores.size(1)) scores.select(1, id).fill_(kNegInf);
}

// Every token impossible but `ids`, which get 0 (transformers' forced BOS/EOS processors).
at::Tensor force(const at::Tensor& scores, const std::vector<int64_t>& ids, const char* setting) {
  auto forced = at::full_like(scores, kNegInf);
  for (int64_t id : ids) {
    check_in_vocab(id, scores.size(1), setting);
    forced.select(1, id).fill_(0);
  }
  return forced;
}

// bad_words_ids as sequence biases of -inf; an EOS token alone is never banned (transformers
// drops such entries).
std::vector<std::pair<std::vector<int64_t>, double>> bad_words(const GenerationConfig& cfg) {
  std::vector<std::pair<std::vector<int64_t>, double>> out;
  for (const auto& seq : cfg.bad_words_ids) {
    const bool lone_eos = seq.size() == 1 && std::find(cfg.eos_token_ids.begin(), cfg.eos_token_ids.end(), seq[0]) !=
                                                 cfg.eos_token_ids.end();
    if (!lone_eos) out.emplace_back(seq, -std::numeric_limits<double>::infinity());
  }
  return out;
}

}  // namespace

bool has_logits_processors(const GenerationConfig& cfg) {
  return !cfg.sequence_bias.empty() || cfg.repetition_penalty != 1.0 || !cfg.bad_words_ids.empty() ||
         !cfg.suppress_tokens.empty() || !cfg.begin_suppress_tokens.empty() || cfg.no_repeat_ngram_size > 0 ||
         (!cfg.eos_token_ids.empty() && (cfg.min_length > 0 || cfg.min_new_tokens > 0)) ||
         cfg.forced_bos_token_id >= 0 || !cfg.forced_eos_token_ids.empty();
}

at::Tensor process_logits(at::Tensor scores, const at::Tensor& sequences, int64_t prompt_len,
                          const GenerationConfig& cfg, const at::Tensor& left_pad) {
  if (!has_logits_processors(cfg)) return scores;
  scores = scores.clone();
  const int64_t cur_len = sequences.size(1);
  if (!cfg.sequence_bias.empty()) add_sequence_bias(scores, sequences, cfg.sequence_bias, "sequence_bias token id");
  if (cfg.repetition_penalty != 1.0) penalize_repeats(scores, sequences, left_pad, cfg.repetition_penalty);
  if (cfg.no_repeat_ngram_size > 0) ban_repeated_ngrams(scores, sequences, cfg.no_repeat_ngram_size);
  if (!cfg.bad_words_ids.empty()) add_sequence_bias(scores, sequences, bad_words(cfg), "bad_words_ids token id");
  if (cur_len < cfg.min_length) forbid(scores, cfg.eos_token_ids);
  if (cur_len - prompt_len < cfg.min_new_tokens) forbid(scores, cfg.eos_token_ids);
  if (cfg.forced_bos_token_id >= 0 && cur_len == 1)
    scores = force(scores, {cfg.forced_bos_token_id}, "forced_bos_token_id");
  if (!cfg.forced_eos_token_ids.empty() && cur_len == prompt_len + cfg.max_new_tokens - 1)
    scores = force(scores, cfg.forced_eos_token_ids, "forced_eos_token_id");
  forbid(scores, cfg.suppress_tokens);
  // The first generated token, or the second where a forced BOS token is the first.
  const bool after_forced_bos = prompt_len == 1 && cfg.forced_bos_token_id >= 0;
  if (cur_len == prompt_len + (after_forced_bos ? 1 : 0)) forbid(scores, cfg.begin_suppress_tokens);
  return scores;
}

}  // namespace peft
