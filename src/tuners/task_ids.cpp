#include "peft/task_ids.h"

#include <ATen/ATen.h>

#include <stdexcept>

namespace peft {

namespace {
// The installed ids and their range (read once per scope, not once per layer: on a GPU
// each read is a host sync).
struct Installed {
  at::Tensor ids;
  int64_t lo = 0, hi = -1;
};
thread_local Installed current;
}  // namespace

TaskIdsScope::TaskIdsScope(at::Tensor ids) : prev_(current.ids), prev_lo_(current.lo), prev_hi_(current.hi) {
  current = {std::move(ids), 0, -1};
  if (current.ids.defined() && current.ids.numel() > 0) {
    const auto cpu = current.ids.to(at::kCPU, at::kLong);
    current.lo = cpu.min().item<int64_t>();
    current.hi = cpu.max().item<int64_t>();
  }
}

TaskIdsScope::~TaskIdsScope() { current = {prev_, prev_lo_, prev_hi_}; }

at::Tensor task_ids_for(const std::string& method, int64_t batch, int64_t n_tasks, at::Device device) {
  const at::Tensor& ids = current.ids;
  if (!ids.defined())
    throw std::invalid_argument(method + " routes each example by its task: give every data line a \"task_ids\" "
                                "integer (peft generate: --task-id)");
  if (ids.dim() != 1 || ids.size(0) != batch)
    throw std::invalid_argument(method + ": " + std::to_string(ids.numel()) + " task ids for a batch of " +
                                std::to_string(batch) + " rows");
  if (current.lo < 0 || current.hi >= n_tasks)
    throw std::invalid_argument(method + ": task id " + std::to_string(current.lo < 0 ? current.lo : current.hi) +
                                " is out of range: the adapter has " + std::to_string(n_tasks) + " tasks");
  return ids.to(device, at::kLong);
}

}  // namespace peft
