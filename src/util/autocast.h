// Mixed precision for a scope: the forward in bf16 where autocast says so. Gradient
// checkpointing uses it too, to recompute in backward with the forward's autocast state.
#pragma once

#include <ATen/autocast_mode.h>

namespace peft {

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
