#include "serve/word_error_rate.h"

#include <algorithm>
#include <cctype>
#include <sstream>

namespace peft {

std::vector<std::string> normalize_words(const std::string& text) {
  std::string s = text;
  for (auto& c : s) {
    const auto u = static_cast<unsigned char>(c);
    c = std::ispunct(u) ? ' ' : static_cast<char>(std::tolower(u));
  }
  std::istringstream in(s);
  std::vector<std::string> words;
  for (std::string w; in >> w;) words.push_back(w);
  return words;
}

int64_t word_edit_distance(const std::vector<std::string>& reference, const std::vector<std::string>& hypothesis) {
  // One row of the Levenshtein table at a time.
  std::vector<int64_t> row(hypothesis.size() + 1);
  for (size_t j = 0; j < row.size(); ++j) row[j] = static_cast<int64_t>(j);
  for (size_t i = 1; i <= reference.size(); ++i) {
    int64_t diagonal = row[0];
    row[0] = static_cast<int64_t>(i);
    for (size_t j = 1; j <= hypothesis.size(); ++j) {
      const int64_t substitute = diagonal + (reference[i - 1] == hypothesis[j - 1] ? 0 : 1);
      diagonal = row[j];
      row[j] = std::min({substitute, row[j] + 1, row[j - 1] + 1});
    }
  }
  return row.back();
}

void WordErrors::add(const std::string& reference, const std::string& hypothesis) {
  const auto ref = normalize_words(reference);
  errors += word_edit_distance(ref, normalize_words(hypothesis));
  words += static_cast<int64_t>(ref.size());
}

}  // namespace peft
