// Feeds arbitrary bytes, as adapter_config.json, to the parser of every PEFT method: as a
// file from HF (unknown keys kept), as a user's method block (unknown keys refused), and
// again from what it saves. Every outcome must be a config or a std::exception. The
// parsers live in libpeft (built by GCC, not instrumented): this target catches
// crashes, hangs and escaping exceptions there, and memory errors in what it inlines.
#include <cstdint>
#include <string>

#include "peft/tuner.h"
#include "util/json_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  nlohmann::ordered_json j;
  try {
    j = peft::parse_ordered_json(text, "fuzz");
  } catch (const std::exception&) {
    return 0;
  }
  try {
    std::vector<std::string> unknown;
    const auto c = peft::parse_adapter_config(j, "fuzz", &unknown);
    const auto saved = c->to_json();  // must parse back to a config of the same type
    if (peft::parse_adapter_config(saved, "fuzz")->peft_type() != c->peft_type()) __builtin_trap();
  } catch (const std::exception&) {
  }
  try {
    peft::parse_user_adapter_config(j, "fuzz");
  } catch (const std::exception&) {
  }
  return 0;
}
