// FedAvg (McMahan et al. 2017) over adapter updates, weighted by example counts, with
// DP-FedAvg's per-client clipping and Gaussian noise (McMahan et al. 2018) as options.
#pragma once

#include <string>
#include <vector>

#include "peft/safetensors.h"

namespace peft::fed {

struct ClientUpdate {
  std::string client;
  int64_t num_examples = 0;
  NamedTensors delta;  // local adapter minus the global one it started from
};

struct DpOptions {
  double clip_norm = 0;         // 0: no clipping
  double noise_multiplier = 0;  // 0: no noise
  uint64_t seed = 0;
};

struct AggregateReport {
  std::vector<double> norms;      // each update's L2 norm before clipping
  std::vector<bool> clipped;
  double noise_std = 0;           // per element, added to the aggregate
  int64_t examples = 0;
};

// global + sum_k n_k clip(delta_k) / sum_k n_k (+ noise), summed in float64, float32 out.
// Noise std is noise_multiplier * clip_norm * max_k n_k / sum_k n_k: one client's largest
// possible contribution to the weighted mean, times the multiplier.
NamedTensors fedavg(const NamedTensors& global, const std::vector<ClientUpdate>& updates, const DpOptions& dp,
                    AggregateReport* report);

}  // namespace peft::fed
