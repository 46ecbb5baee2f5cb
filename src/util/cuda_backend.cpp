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

namespace {

std::string path_beside_this_library(const std::string& file) {
  Dl_info info{};
  if (!dladdr(reinterpret_cast<void*>(&path_beside_this_library), &info) || !info.dli_fname) return file;
  const std::string self = info.dli_fname;
  const auto slash = self.rfind('/');
  return (slash == std::string::npos ? std::string() : self.substr(0, slash + 1)) + file;
}

}  // namespace

std::vector<void*> open_cuda_side_library(const std::string& file, std::initializer_list<const char*> symbols,
                                          std::string& error) {
  if (const std::string& why = load_cuda_backend(); !why.empty()) return error = why, std::vector<void*>{};
  const std::string path = path_beside_this_library(file);
  void* lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    const char* why = dlerror();
    error = "cannot load " + path + ": " + (why ? why : "unknown error");
    return {};
  }
  std::vector<void*> found;
  for (const char* symbol : symbols) {
    found.push_back(dlsym(lib, symbol));
    if (!found.back()) return error = path + " lacks " + symbol, std::vector<void*>{};
  }
  return found;
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
