// Feeds arbitrary bytes to the GGUF parser. It must either return a header whose
// tensors all lie inside the input, or throw GgufError; nothing else. What parses is
// dequantized (a few blocks per tensor), written back with GgufWriter and parsed again,
// which must give the same metadata and tensors; the llama config and tokenizer
// conversions must likewise succeed or throw GgufError.
#include <cstdint>
#include <algorithm>
#include <cstdlib>
#include <vector>

#include "peft/gguf.h"
#include "peft/gguf_llama.h"

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

void round_trip(const peft::GgufHeader& h, const uint8_t* data) {
  peft::GgufWriter w;
  for (const auto& [key, value] : h.metadata.entries()) w.metadata().add(key, value);
  for (const auto& t : h.tensors)
    w.add_tensor_view(t.name, t.dims, t.type, {data + h.data_start + t.offset, static_cast<size_t>(t.n_bytes)});
  const std::string bytes = w.to_bytes();
  const auto back = peft::parse_gguf(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "round trip");
  check(back.metadata.entries() == h.metadata.entries());
  check(back.tensors.size() == h.tensors.size());
  for (size_t i = 0; i < h.tensors.size(); ++i) {
    const auto& a = h.tensors[i];
    const auto& b = back.tensors[i];
    check(a.name == b.name && a.dims == b.dims && a.type == b.type && a.n_bytes == b.n_bytes);
    check(std::equal(data + h.data_start + a.offset, data + h.data_start + a.offset + a.n_bytes,
                     reinterpret_cast<const uint8_t*>(bytes.data()) + back.data_start + b.offset));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  peft::GgufHeader h;
  try {
    h = peft::parse_gguf(data, size, "fuzz");
  } catch (const peft::GgufError&) {
    return 0;
  }
  for (const auto& t : h.tensors) {
    check(h.data_start + t.offset + t.n_bytes <= size);
    if (!peft::can_dequantize(t.type)) continue;
    const int64_t bs = peft::type_block_size(t.type);
    const int64_t n = std::min<int64_t>(t.n_elements, 4 * 256) / bs * bs;
    std::vector<float> out(static_cast<size_t>(n));
    peft::dequantize(t.type, data + h.data_start + t.offset, n, out.data());
  }
  try {
    round_trip(h, data);
  } catch (const peft::GgufError&) {
    // Only what the writer refuses to write may fail: long tensor names.
    bool long_name = false;
    for (const auto& t : h.tensors) long_name |= t.name.size() > 63 || t.name.empty();
    check(long_name);
  }
  try {
    peft::llama_config_from_gguf(h).dump();
  } catch (const peft::GgufError&) {
  }
  try {
    const auto files = peft::hf_tokenizer_from_gguf(h);
    files.tokenizer.dump();
    files.tokenizer_config.dump();
  } catch (const peft::GgufError&) {
  }
  return 0;
}
