// The entry point of libpeft_nccl.so: LibTorch's ProcessGroupNCCL behind c10d's Backend
// interface. That class lives in libtorch_cuda, which CPU runs never load, so the group is
// made in a library of its own that src/train/collective_backend.cpp opens on demand.
#pragma once

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <chrono>
#include <string>

// Makes rank `rank` of `size`'s NCCL group over `store`. On success sets `out`; otherwise
// leaves it null and sets `error` to one line. Communicators are created by the first
// collective, on the device of its tensors.
extern "C" void peft_nccl_open_group(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                                     std::chrono::milliseconds timeout, c10::intrusive_ptr<c10d::Backend>& out,
                                     std::string& error) noexcept;

using PeftNcclOpenGroupFn = decltype(&peft_nccl_open_group);
