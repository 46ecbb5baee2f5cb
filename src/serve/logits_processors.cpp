#include "serve/logits_processors.h"

#include <ATen/ATen.h>

#include <limits>
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
  const auto opts = at::TensorOptions(at::kLong).device(scores.device());
  scores.index_put_({at::tensor(ban_rows, at::kLong).to(opts.device()), at::tensor(ban_ids, at::kLong).to(opts.device())},
                    at::scalar_tensor(kNegInf, scores.options()));
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

}  // namespace

bool has_logits_processors(const GenerationConfig& cfg) {
  return cfg.no_repeat_ngram_size > 0 || (!cfg.eos_token_ids.empty() && (cfg.min_length > 0 || cfg.min_new_tokens > 0)) ||
         cfg.forced_bos_token_id >= 0 || !cfg.forced_eos_token_ids.empty();
}

at::Tensor process_logits(at::Tensor scores, const at::Tensor& sequences, int64_t prompt_len,
                          const GenerationConfig& cfg) {
  if (!has_logits_processors(cfg)) return scores;
  scores = scores.clone();
  const int64_t cur_len = sequences.size(1);
  if (cfg.no_repeat_ngram_size > 0) ban_repeated_ngrams(scores, sequences, cfg.no_repeat_ngram_size);
  if (cur_len < cfg.min_length) forbid(scores, cfg.eos_token_ids);
  if (cur_len - prompt_len < cfg.min_new_tokens) forbid(scores, cfg.eos_token_ids);
  if (cfg.forced_bos_token_id >= 0 && cur_len == 1)
    scores = force(scores, {cfg.forced_bos_token_id}, "forced_bos_token_id");
  if (!cfg.forced_eos_token_ids.empty() && cur_len == prompt_len + cfg.max_new_tokens - 1)
    scores = force(scores, cfg.forced_eos_token_ids, "forced_eos_token_id");
  return scores;
}

}  // namespace peft
