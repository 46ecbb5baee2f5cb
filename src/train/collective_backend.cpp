#include "train/collective_backend.h"

#include <stdexcept>

#include "train/distributed.h"
#include "train/nccl/open_group.h"
#include "util/cuda_backend.h"

namespace peft {

const char* backend_name(CollectiveBackend b) { return b == CollectiveBackend::kNccl ? "NCCL" : "Gloo"; }

CollectiveBackend choose_backend(const std::string& device, const DistEnv& env, const char* requested,
                                 int cuda_devices) {
  const std::string want = requested ? requested : "";
  const bool cuda = device.rfind("cuda", 0) == 0;
  if (want == "gloo") return CollectiveBackend::kGloo;
  if (want == "nccl") {
    if (!cuda)
      throw std::invalid_argument("PEFT_DDP_BACKEND=nccl: NCCL moves GPU tensors only, and this run's device is '" +
                                  device + "' (use gloo)");
    return CollectiveBackend::kNccl;
  }
  if (!want.empty())
    throw std::invalid_argument("PEFT_DDP_BACKEND='" + want +
                                "' is not a backend (use gloo or nccl, or leave it unset)");
  return device == "cuda" && cuda_devices >= env.local_world_size ? CollectiveBackend::kNccl
                                                                   : CollectiveBackend::kGloo;
}

namespace {

PeftNcclOpenGroupFn nccl_entry() {
  static std::string error;
  static const auto entry = [] {
    const auto found = open_cuda_side_library("libpeft_nccl.so", {"peft_nccl_open_group"}, error);
    return found.empty() ? nullptr : reinterpret_cast<PeftNcclOpenGroupFn>(found[0]);
  }();
  if (!entry) throw std::runtime_error("NCCL for data-parallel training: " + error);
  return entry;
}

}  // namespace

c10::intrusive_ptr<c10d::Backend> open_nccl_group(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                                                  std::chrono::milliseconds timeout) {
  const PeftNcclOpenGroupFn open = nccl_entry();
  c10::intrusive_ptr<c10d::Backend> group;
  std::string error;
  open(store, rank, size, timeout, group, error);
  if (!group) throw std::runtime_error("NCCL for data-parallel training: " + error);
  return group;
}

}  // namespace peft
