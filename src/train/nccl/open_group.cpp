// libpeft_nccl.so: compiled against the torch wheel's c10d headers and NCCL's nccl.h, linked
// to libtorch_cuda (which holds ProcessGroupNCCL's code) and nothing of ours.
#define USE_C10D_NCCL 1
#include "train/nccl/open_group.h"

#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

#include <algorithm>
#include <cstdlib>

extern "C" void peft_nccl_open_group(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                                     std::chrono::milliseconds timeout, c10::intrusive_ptr<c10d::Backend>& out,
                                     std::string& error) noexcept {
  // Read when the group is made. A blocking wait makes work->wait() return only when the
  // collective is done, and throw when it failed or ran past `timeout` (a rank died):
  // DataParallel turns that into one line naming the rank. Clean-up-only error handling
  // aborts the communicators without tearing the process down, so that line gets out.
  // A user's own setting wins.
  setenv("TORCH_NCCL_BLOCKING_WAIT", "1", 0);
  setenv("TORCH_NCCL_ASYNC_ERROR_HANDLING", "2", 0);
  try {
    auto options = c10d::ProcessGroupNCCL::Options::create();
    options->timeout = timeout;
    out = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, size, options);
  } catch (const std::exception& e) {
    out.reset();
    error = e.what();
    error.resize(std::min(error.find('\n'), error.size()));
  }
}
