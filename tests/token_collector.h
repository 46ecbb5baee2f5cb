// The serving engine's tests (test_engine.cpp, test_engine_seq2seq.cpp): what each request
// hears from the engine.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "peft/engine.h"

namespace peft {

// The tokens a request hears, and how it ended.
struct Collector {
  std::mutex mu;
  std::condition_variable cv;
  std::map<uint64_t, std::vector<int64_t>> tokens;
  std::map<uint64_t, std::string> reasons;

  std::function<void(const TokenEvent&)> sink(uint64_t* id) {
    return [this, id](const TokenEvent& e) {
      std::lock_guard lk(mu);
      if (e.token >= 0) tokens[*id].push_back(e.token);
      if (e.done) reasons[*id] = e.finish_reason + (e.error.empty() ? "" : ": " + e.error);
      cv.notify_all();
    };
  }
  // A fatal failure after two minutes without n finished requests.
  void wait_for(size_t n) {
    std::unique_lock lk(mu);
    ASSERT_TRUE(cv.wait_for(lk, std::chrono::seconds(120), [&] { return reasons.size() >= n; }));
  }
};

}  // namespace peft
