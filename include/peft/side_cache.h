// A second KV cache that follows a decode's main cache: input adapters that run a pass of
// their own before the model's (SHADOW's mirror backbone, X-LoRA's scaling pass) keep
// that pass's keys and values here, so a cached decode computes what the full forward does.
#pragma once

#include <string>

#include "peft/model.h"

namespace peft {

class SideCache {
 public:
  // The cache for this forward's own pass, given the model's cache `main`. A new decode
  // (another cache, or an empty one) starts it afresh; a main cache whose length differs
  // from it (a decode this adapter did not follow) is refused, naming `who`.
  KVCache* follow(const KVCache* main, const std::string& who);

 private:
  KVCache cache_;
  const KVCache* owner_ = nullptr;
};

}  // namespace peft
