// Word error rate of transcripts against references: word-level Levenshtein distance
// (substitutions + deletions + insertions) over the references' word count, as jiwer's
// wer() computes it, on words normalized as `normalize_words` says.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace peft {

// Lowercased (ASCII), ASCII punctuation turned into spaces, split on whitespace: "Seven,
// eight." and "seven eight" are the same two words.
std::vector<std::string> normalize_words(const std::string& text);

// Fewest word substitutions, deletions and insertions turning `reference` into `hypothesis`.
int64_t word_edit_distance(const std::vector<std::string>& reference, const std::vector<std::string>& hypothesis);

struct WordErrors {
  int64_t errors = 0, words = 0;  // summed over the utterances: the corpus-level WER
  void add(const std::string& reference, const std::string& hypothesis);
  double rate() const { return words > 0 ? static_cast<double>(errors) / static_cast<double>(words) : 0.0; }
};

}  // namespace peft
