// torch.Generator seeds in adapter_config.json (VeRA's and RandLoRA's projection_prng_key):
// torch.Generator.manual_seed takes any 64-bit integer, and a negative one wraps as uint64.
#pragma once

#include <cstdint>

#include "tuners/config_fields.h"

namespace peft {

inline uint64_t torch_seed_field(const ConfigFields& f, const char* key) {
  const auto& v = f.value(key);
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  return static_cast<uint64_t>(f.get<int64_t>(key));
}

// A seed past 2^63 was a negative number in the file (the same seed to torch): written so.
inline ojson torch_seed_json(uint64_t seed) {
  if (seed > static_cast<uint64_t>(INT64_MAX)) return static_cast<int64_t>(seed);
  return seed;
}

}  // namespace peft
