// The benches' timer: the best of several runs of one call, after a warm-up run (caches,
// page faults and lazy initialization land in the warm-up, noise only ever adds time).
#pragma once

#include <algorithm>
#include <chrono>
#include <functional>

namespace peft::bench {

inline double best_seconds(const std::function<void()>& fn, int reps) {
  fn();  // warm-up
  double best = 1e30;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

}  // namespace peft::bench
