// Learning-rate schedules as transformers defines them (LambdaLR multipliers of the base lr).
#pragma once

#include <cmath>
#include <string>

namespace peft {

// Multiplier of the base learning rate after `step` scheduler steps.
inline double lr_lambda(const std::string& type, int64_t step, int64_t warmup, int64_t total) {
  const double s = static_cast<double>(step), w = static_cast<double>(warmup), t = static_cast<double>(total);
  if (type == "constant") return 1.0;
  if (step < warmup) return s / std::max(1.0, w);
  if (type == "constant_with_warmup") return 1.0;
  if (type == "linear") return std::max(0.0, (t - s) / std::max(1.0, t - w));
  // cosine, num_cycles = 0.5
  const double progress = (s - w) / std::max(1.0, t - w);
  return std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * 0.5 * 2.0 * progress)));
}

}  // namespace peft
