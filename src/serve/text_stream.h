// Generated token ids -> the text a client may see so far, for streaming and for
// non-streaming responses alike (both are the concatenation of what push() returns, so a
// stream always adds up to the non-stream text).
//
// Two jobs, kept apart:
//  - IncrementalDecoder: decodes each new token in the context of a few earlier ones (as
//    vLLM does), so decoders that look at neighbours (SentencePiece's leading space) give
//    the same text as a whole decode; and holds back a trailing incomplete UTF-8 character
//    (the tokenizer shows it as U+FFFD) until the token completing it arrives.
//  - StopStrings: finds the first stop string in the text and cuts it (and all after) off;
//    holds back a tail that could still become a stop string.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace peft {

class Tokenizer;

class IncrementalDecoder {
 public:
  // `context`: the prompt's ids; its last few tokens seed the decoding window.
  IncrementalDecoder(const Tokenizer& tok, const std::vector<int64_t>& context, bool skip_special_tokens = true);
  // The text that `id` adds, possibly "" (a partial character, a skipped special token).
  std::string push(int64_t id);
  // At the end: what was held back (an incomplete character decodes as U+FFFD).
  std::string flush();

 private:
  std::string take(bool final);
  const Tokenizer& tok_;
  bool skip_special_;
  std::vector<int64_t> ids_;
  size_t prefix_ = 0, read_ = 0;  // ids_[prefix_, read_) is context already shown
};

class StopStrings {
 public:
  explicit StopStrings(std::vector<std::string> stops);
  // Appends decoded text; returns what can be shown now. After a stop string, hit() is
  // true and nothing more is returned.
  std::string push(const std::string& text);
  // At the end (no stop string seen): the held-back tail.
  std::string flush();
  bool hit() const { return hit_; }

 private:
  std::vector<std::string> stops_;
  std::string pending_;
  bool hit_ = false;
};

// True when `s` ends inside a UTF-8 sequence or with U+FFFD (what a decoder shows for one).
bool ends_with_partial_char(const std::string& s);

}  // namespace peft
