#include "text_stream.h"

#include <algorithm>

#include "peft/tokenizer.h"

namespace peft {

namespace {
// vLLM's window: this many earlier tokens give a new token its decoding context.
constexpr size_t kContextTokens = 5;
// A character is at most 4 bytes (4 byte-fallback tokens); beyond this many tokens
// without complete text, the text is shown as decoded (with its U+FFFD) rather than held.
constexpr size_t kMaxHeldTokens = 8;
}  // namespace

bool ends_with_partial_char(const std::string& s) {
  static const std::string kReplacement = "\xEF\xBF\xBD";
  if (s.size() >= 3 && s.compare(s.size() - 3, 3, kReplacement) == 0) return true;
  // A lead byte whose sequence is cut short (a decoder that returns raw bytes).
  for (size_t back = 1; back <= std::min<size_t>(4, s.size()); ++back) {
    const auto c = static_cast<unsigned char>(s[s.size() - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte: look further back
    const size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    return need > back;
  }
  return false;
}

IncrementalDecoder::IncrementalDecoder(const Tokenizer& tok, const std::vector<int64_t>& context,
                                       bool skip_special_tokens)
    : tok_(tok), skip_special_(skip_special_tokens) {
  const size_t n = std::min(context.size(), kContextTokens);
  ids_.assign(context.end() - static_cast<long>(n), context.end());
  read_ = ids_.size();
}

std::string IncrementalDecoder::take(bool final) {
  auto slice = [&](size_t a, size_t b) {
    return std::vector<int64_t>(ids_.begin() + static_cast<long>(a), ids_.begin() + static_cast<long>(b));
  };
  const std::string prefix_text = tok_.decode(slice(prefix_, read_), skip_special_);
  const std::string new_text = tok_.decode(slice(prefix_, ids_.size()), skip_special_);
  const bool held_too_long = ids_.size() - read_ > kMaxHeldTokens;
  if (!final && !held_too_long && ends_with_partial_char(new_text)) return "";
  std::string delta = new_text.size() > prefix_text.size() ? new_text.substr(prefix_text.size()) : "";
  if (delta.empty() && !final && !held_too_long && new_text.size() < prefix_text.size()) return "";
  prefix_ = read_;
  read_ = ids_.size();
  // Drop ids that can no longer be context, so a long generation keeps a short vector.
  if (prefix_ > 4 * kContextTokens) {
    ids_.erase(ids_.begin(), ids_.begin() + static_cast<long>(prefix_));
    read_ -= prefix_;
    prefix_ = 0;
  }
  return delta;
}

std::string IncrementalDecoder::push(int64_t id) {
  ids_.push_back(id);
  return take(false);
}

std::string IncrementalDecoder::flush() { return read_ < ids_.size() ? take(true) : ""; }

StopStrings::StopStrings(std::vector<std::string> stops) : stops_(std::move(stops)) {
  std::erase_if(stops_, [](const std::string& s) { return s.empty(); });
}

std::string StopStrings::push(const std::string& text) {
  if (hit_) return "";
  pending_ += text;
  size_t first = std::string::npos;
  for (const auto& s : stops_) first = std::min(first, pending_.find(s));
  if (first != std::string::npos) {
    hit_ = true;
    std::string out = pending_.substr(0, first);
    pending_.clear();
    return out;
  }
  // Hold back the longest tail that is the start of some stop string.
  size_t hold = 0;
  for (const auto& s : stops_)
    for (size_t k = std::min(s.size() - 1, pending_.size()); k > hold; --k)
      if (pending_.compare(pending_.size() - k, k, s, 0, k) == 0) {
        hold = k;
        break;
      }
  std::string out = pending_.substr(0, pending_.size() - hold);
  pending_.erase(0, pending_.size() - hold);
  return out;
}

std::string StopStrings::flush() {
  std::string out;
  if (!hit_) out.swap(pending_);
  return out;
}

}  // namespace peft
