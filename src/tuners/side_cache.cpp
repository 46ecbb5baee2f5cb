#include "peft/side_cache.h"

#include <stdexcept>

namespace peft {

KVCache* SideCache::follow(const KVCache* main, const std::string& who) {
  if (main != owner_ || main->length() == 0) {
    cache_ = KVCache();
    owner_ = main;
  }
  if (cache_.length() != main->length())
    throw std::runtime_error(who + ": its own cache holds " + std::to_string(cache_.length()) +
                             " positions but the model's " + std::to_string(main->length()) +
                             "; both must advance together (start a decode from an empty cache)");
  return &cache_;
}

}  // namespace peft
