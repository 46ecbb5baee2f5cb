// Feeds arbitrary bytes to the SentencePiece model reader (MarianTokenizer's source.spm /
// target.spm) and then to its normalizer, encoder and decoder: the input is a 4-byte
// little-endian length L, L bytes of model file, and the text to encode. Every outcome
// must be a result or a std::exception; never a crash, a sanitizer report, a hang or a leak.
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "tokenizer/sentencepiece.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 4) return 0;
  uint32_t n = 0;
  std::memcpy(&n, data, 4);
  if (n > size - 4) n = static_cast<uint32_t>(size - 4);
  const std::string model(reinterpret_cast<const char*>(data + 4), n);
  const std::string text(reinterpret_cast<const char*>(data + 4 + n), size - 4 - n);
  try {
    const auto sp = peft::tok::SentencePiece::from_bytes(model, "fuzz");
    try {
      std::vector<std::string> pieces;
      for (const auto& p : sp.encode(text)) pieces.push_back(p.text);
      sp.decode(pieces);
      sp.decode({text});
      sp.normalize(text);
    } catch (const std::exception&) {
    }
  } catch (const std::exception&) {
  }
  return 0;
}
