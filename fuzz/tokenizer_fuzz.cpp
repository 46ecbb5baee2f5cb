// Feeds arbitrary bytes to tokenizer.json parsing and then to the tokenizer: the input is
// a 4-byte little-endian length L, L bytes of tokenizer.json, and the text to encode.
// Every outcome must be a result or a std::exception; never a crash, a sanitizer
// report, a hang or a leak.
#include <cstdint>
#include <cstring>
#include <string>

#include "peft/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 4) return 0;
  uint32_t n = 0;
  std::memcpy(&n, data, 4);
  if (n > size - 4) n = static_cast<uint32_t>(size - 4);
  const std::string json(reinterpret_cast<const char*>(data + 4), n);
  const std::string text(reinterpret_cast<const char*>(data + 4 + n), size - 4 - n);
  try {
    const auto tok = peft::Tokenizer::from_json(json, "fuzz");
    try {
      const auto e = tok.encode(text);
      tok.decode(e.ids, false);
      tok.decode(e.ids, true);
      tok.encode_pair(text, text);
    } catch (const std::exception&) {
    }
  } catch (const std::exception&) {
  }
  return 0;
}
