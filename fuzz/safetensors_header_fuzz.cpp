// Feeds arbitrary bytes to the safetensors header parser. It must either return a header
// whose offsets all lie inside the input, or throw SafetensorsError; nothing else.
#include <cstdint>
#include <cstdlib>

#include "peft/safetensors_header.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto h = peft::parse_safetensors_header(data, size, "fuzz");
    for (const auto& t : h.tensors)
      if (h.data_start + t.end > size || t.begin > t.end) std::abort();
    peft::serialize_safetensors_header(h.tensors, h.metadata);
  } catch (const peft::SafetensorsError&) {
  }
  return 0;
}
