#include "util/cuda_backend.h"

#include <ATen/Context.h>
#include <dlfcn.h>

#include <stdexcept>

namespace peft {

const std::string& load_cuda_backend() {
  static const std::string error = [] {
    // Found through this library's RUNPATH (LibTorch's lib folder, set by the build).
    for (const char* name : {"libc10_cuda.so", "libtorch_cuda.so"}) {
      if (!dlopen(name, RTLD_NOW | RTLD_GLOBAL)) {
        const char* why = dlerror();
        return std::string("cannot load ") + name + ": " + (why ? why : "unknown error");
      }
    }
    return std::string();
  }();
  return error;
}

at::Device usable_device(const std::string& name) {
  const at::Device device(name);  // throws on a malformed name
  if (device.is_cuda() && !load_cuda_backend().empty())
    throw std::runtime_error("device '" + name + "': " + load_cuda_backend());
  if (device.is_cuda() && !at::hasCUDA())
    throw std::runtime_error("device '" + name + "': this machine has no usable CUDA GPU (or torch was built "
                             "without CUDA)");
  return device;
}

}  // namespace peft
