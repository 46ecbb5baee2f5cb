#include "util/cuda_backend.h"

#include <dlfcn.h>

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

}  // namespace peft
