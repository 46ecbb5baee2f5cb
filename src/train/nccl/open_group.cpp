// libpeft_nccl.so: compiled against the torch wheel's c10d headers and NCCL's nccl.h, linked
// to libtorch_cuda (which holds ProcessGroupNCCL's code) and nothing of ours.
#define USE_C10D_NCCL 1
#include "train/nccl/open_group.h"

#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

#include <algorithm>

extern "C" void peft_nccl_open_group(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                                     std::chrono::milliseconds timeout, c10::intrusive_ptr<c10d::Backend>& out,
                                     std::string& error) noexcept {
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
