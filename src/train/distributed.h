// Data-parallel training on LibTorch's c10d: the group of processes a run trains in
// (rendezvous through a TCPStore, collectives through ProcessGroupGloo, or ProcessGroupNCCL
// between GPUs), and a launcher for N local workers. See docs/TRAINING.md, "Data-parallel".
#pragma once

#include <ATen/core/Tensor.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace peft {

// Where this process stands, from torchrun's environment: RANK, WORLD_SIZE, LOCAL_RANK,
// LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT (and TORCHELASTIC_USE_AGENT_STORE: the launcher hosts the
// store). Without WORLD_SIZE, or with WORLD_SIZE=1, a single process.
struct DistEnv {
  int rank = 0, world_size = 1, local_rank = 0;
  int local_world_size = 1;  // the ranks on this machine (absent: all of them)
  std::string master_addr = "127.0.0.1";
  int master_port = 0;
  bool launcher_hosts_store = false;  // else rank 0 hosts it
  std::chrono::seconds timeout{300};  // PEFT_DDP_TIMEOUT_S: a collective that waits longer fails
  // Throws naming the variable when one is missing or malformed.
  static DistEnv from_environment();
};

// The device a rank trains on: a plain "cuda" becomes "cuda:<LOCAL_RANK mod devices>", as
// torchrun's workers take one GPU each (more ranks than GPUs share them round-robin); any
// other name, and every name in a single process, stays as it is.
std::string rank_device(const std::string& device, const DistEnv& env, int device_count);

// PEFT_DDP_TIMEOUT_S, default 300: how long a collective (or the rendezvous) may wait.
std::chrono::seconds ddp_timeout();

// The processes a run trains in. With one process every call is a no-op, so the trainer
// calls them unconditionally. A collective that fails (a worker died, or stopped for
// longer than the timeout) throws one line naming the rank that stopped.
class DataParallel {
 public:
  // Joins the group `env` describes, for a run on `device` (the config's name). The
  // backend is choose_backend's (collective_backend.h), as rank 0 chose it. Collectives
  // take tensors on any device: a tensor the backend does not move where it is (a GPU's
  // for Gloo, a host one for NCCL) goes through a copy.
  explicit DataParallel(const DistEnv& env, const std::string& device = "cpu");
  ~DataParallel();
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  int rank() const { return env_.rank; }
  int world_size() const { return env_.world_size; }
  bool is_main() const { return env_.rank == 0; }
  // "Gloo" or "NCCL"; "" in a single process.
  std::string backend() const;

  // Rank 0's tensors into everyone's, in place.
  void broadcast(std::vector<at::Tensor>& tensors);
  // Sums in place over the ranks (double or integer tensors: exact in any order).
  void all_reduce_sum(at::Tensor& t);
  // Starts summing `t` over the ranks and returns at once; the returned call waits for the
  // sum, leaves it in `t`, and throws as all_reduce_sum does. Every rank must start its
  // sums in the same order (a collective is matched by its place in that order).
  std::function<void()> start_sum(at::Tensor t);
  // Rank 0's string, for everyone (e.g. the checkpoint to resume from).
  std::string share(const std::string& key, const std::string& value_on_rank0);
  // Before a rank exits on its own error: tells the others what and who.
  void report_failure(const std::string& what) noexcept;

 private:
  struct Impl;
  void staged(at::Tensor& t, const std::function<void(at::Tensor&)>& collective);
  at::Tensor on_backend_device(const at::Tensor& t) const;
  void open_group(const std::string& device);
  template <class F>
  void guarded(const char* op, F&& f);
  std::string diagnose(const char* op, const std::string& error);
  void linger_if_store_host();

  DistEnv env_;
  std::unique_ptr<Impl> impl_;
  bool lingered_ = false;
};

// `peft train --nproc N`: runs N copies of this program (argv, without --nproc) with
// torchrun's environment, hosting their rendezvous store on a free loopback port. Waits
// for all; when one fails, the others get the timeout to fail on their own, then are
// killed. Returns 0 if every worker succeeded, else the first failure's exit status.
int launch_local_workers(int nproc, const std::vector<std::string>& argv);

}  // namespace peft
