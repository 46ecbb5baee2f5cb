// LibTorch's CUDA backend, loaded on first use.
//
// The CUDA build of LibTorch links a dozen NVIDIA libraries (cuBLAS, cuDNN, NCCL, ...);
// loading them at start-up costs every CPU run over 100 MB of resident memory and time.
// The binary therefore links only LibTorch's CPU half; libtorch_cuda is opened when a
// caller first asks for a CUDA device, and its static initializers register the CUDA
// kernels and hooks exactly as if it had been linked.
#pragma once

#include <c10/core/Device.h>

#include <initializer_list>
#include <string>
#include <vector>

namespace peft {

// Loads libtorch_cuda (once; later calls return the first answer). Returns "" on success,
// else why not (a CPU-only LibTorch, a library that failed to load).
const std::string& load_cuda_backend();

// The device `name` ("cpu", "cuda", "cuda:1") names, once it is usable: a malformed name,
// a CUDA device without LibTorch's CUDA backend or without a GPU is a one-line error.
at::Device usable_device(const std::string& name);

// Our own CUDA-side library `file` (libpeft_cuda.so, libpeft_nccl.so: built beside this
// library, in the build folder or the install's lib/), opened once LibTorch's CUDA half is
// loaded, and the addresses of `symbols` in it, in order. On failure returns an empty
// vector and sets `error` to one line.
std::vector<void*> open_cuda_side_library(const std::string& file, std::initializer_list<const char*> symbols,
                                          std::string& error);

}  // namespace peft
