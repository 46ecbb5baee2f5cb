#include "federated/aggregate.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <map>
#include <stdexcept>

#include "federated/protocol.h"

namespace peft::fed {

NamedTensors fedavg(const NamedTensors& global, const std::vector<ClientUpdate>& updates, const DpOptions& dp,
                    AggregateReport* report) {
  if (updates.empty()) throw std::invalid_argument("fedavg: no updates");
  AggregateReport r;
  int64_t max_n = 0;
  for (const auto& u : updates) {
    r.examples += u.num_examples;
    max_n = std::max(max_n, u.num_examples);
  }
  std::map<std::string, at::Tensor> sum;
  for (const auto& [k, t] : global) sum[k] = at::zeros(t.sizes(), at::kDouble);
  for (const auto& u : updates) {
    const double norm = l2_norm(u.delta);
    const double scale = dp.clip_norm > 0 ? std::min(1.0, dp.clip_norm / std::max(norm, 1e-300)) : 1.0;
    r.norms.push_back(norm);
    r.clipped.push_back(scale < 1.0);
    const double w = static_cast<double>(u.num_examples) / static_cast<double>(r.examples) * scale;
    for (const auto& [k, d] : u.delta) sum.at(k).add_(d.to(at::kDouble), w);
  }
  if (dp.noise_multiplier > 0) r.noise_std = dp.noise_multiplier * dp.clip_norm * max_n / static_cast<double>(r.examples);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(dp.seed);
  NamedTensors out;
  for (const auto& [k, t] : global) {
    at::Tensor v = t.to(at::kDouble) + sum.at(k);
    if (r.noise_std > 0) v += at::normal(0.0, r.noise_std, t.sizes(), gen, at::TensorOptions().dtype(at::kDouble));
    out.emplace_back(k, v.to(at::kFloat));
  }
  if (report) *report = std::move(r);
  return out;
}

}  // namespace peft::fed
