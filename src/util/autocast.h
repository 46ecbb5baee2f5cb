// Mixed precision for a scope: the forward in bf16 where autocast says so. Gradient
// checkpointing uses it too, to recompute in backward with the forward's autocast state.
// And the one test our hand-written inference kernels make before replacing ATen's ops.
#pragma once

#include <ATen/autocast_mode.h>
#include <c10/core/GradMode.h>

namespace peft {

// True where a kernel that records no autograd graph and computes in its inputs' dtypes may
// stand in for ATen's ops on these CPU tensors: autocast is off on the CPU (it would pick
// another dtype) and no gradient is wanted through any of them. Undefined tensors count
// as wanting none.
template <class... Tensors>
bool plain_cpu_inference(const Tensors&... tensors) {
  if (at::autocast::is_autocast_enabled(at::kCPU)) return false;
  return !at::GradMode::is_enabled() || !((tensors.defined() && tensors.requires_grad()) || ...);
}

// Autocast on `device` for the guard's lifetime; the previous state comes back after.
class AutocastGuard {
 public:
  AutocastGuard(at::DeviceType device, bool on, at::ScalarType dtype)
      : device_(device), was_on_(at::autocast::is_autocast_enabled(device)),
        was_dtype_(at::autocast::get_autocast_dtype(device)) {
    at::autocast::set_autocast_enabled(device_, on);
    at::autocast::set_autocast_dtype(device_, dtype);
  }
  ~AutocastGuard() {
    at::autocast::set_autocast_enabled(device_, was_on_);
    at::autocast::set_autocast_dtype(device_, was_dtype_);
    if (!was_on_) at::autocast::clear_cache();  // leaving the outermost scope, as torch does
  }
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  at::DeviceType device_;
  bool was_on_;
  at::ScalarType was_dtype_;
};

}  // namespace peft
