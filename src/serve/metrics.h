// Server-side counters and latency histograms, rendered with the engine's gauges in
// Prometheus' text format (GET /metrics).
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "peft/engine.h"

namespace peft {

// A cumulative Prometheus histogram (le buckets, sum, count); thread-safe.
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double v);
  // "<name>_bucket{le=...} n" lines, _sum and _count, after HELP and TYPE.
  std::string render(const std::string& name, const std::string& help) const;

 private:
  mutable std::mutex mu_;
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket, not cumulative; one more for +Inf
  double sum_ = 0;
  uint64_t count_ = 0;
};

struct ServerMetrics {
  // Measured where the engine reports tokens (its thread), per request.
  Histogram ttft{{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}};
  Histogram inter_token{{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5}};
  std::atomic<uint64_t> requests_submitted{0}, prompt_tokens{0};
  void count_response(int status);

  // The whole exposition: these plus the engine's gauges and counters (`stats`) and the
  // number of adapters resident.
  std::string render(const EngineStats& stats, size_t adapters) const;

 private:
  mutable std::mutex mu_;
  std::map<int, uint64_t> responses_;  // by HTTP status
};

}  // namespace peft
