// "Did you mean ...?" for a misspelt key or name.
#pragma once

#include <string>
#include <vector>

namespace peft {

// The closest of `known` to `word` (edit distance at most a third of its length, and at
// least 1 allowed), or "" if none is close.
std::string closest_match(const std::string& word, const std::vector<std::string>& known);

// " (did you mean 'x'?)" or "".
std::string did_you_mean(const std::string& word, const std::vector<std::string>& known);

}  // namespace peft
