// Which c10d backend carries a data-parallel run's tensors, and the NCCL one's loader.
// Gloo (in libtorch_cpu) serves every run; NCCL (in libtorch_cuda, reached through our
// libpeft_nccl.so) serves GPU runs where each local rank has a GPU of its own.
#pragma once

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <chrono>
#include <string>

namespace peft {

struct DistEnv;

enum class CollectiveBackend { kGloo, kNccl };

const char* backend_name(CollectiveBackend b);

// The backend for a run on `device` (the config's: "cpu", "cuda", "cuda:N").
// `requested` is PEFT_DDP_BACKEND: "gloo" or "nccl" choose; unset or empty chooses NCCL
// for "cuda" when the machine has a GPU for each local rank (LOCAL_WORLD_SIZE), Gloo
// otherwise (CPU runs, a pinned "cuda:N" that every rank shares, fewer GPUs than ranks:
// NCCL refuses two ranks on one GPU). Throws one line for an unknown value, or for "nccl"
// on a CPU device.
CollectiveBackend choose_backend(const std::string& device, const DistEnv& env, const char* requested,
                                 int cuda_devices);

// Rank `rank` of `size`'s ProcessGroupNCCL over `store`, from libpeft_nccl.so beside this
// library. Throws one line when the library or the group cannot be had.
c10::intrusive_ptr<c10d::Backend> open_nccl_group(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                                                  std::chrono::milliseconds timeout);

}  // namespace peft
