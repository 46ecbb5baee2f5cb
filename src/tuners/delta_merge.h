// Merging an adapter that is a delta of its host's weight (LoHa, LoKr, VeRA, FourierFT).
#pragma once

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include "peft/adaptable.h"

namespace peft {

// host.weight += sign * delta, where delta is [out, in]: transposed for a host that stores
// [in, out] (GPT-2's Conv1D), moved to the weight's device and dtype.
inline void add_delta_to_host(AdaptableLayer& host, at::Tensor delta, int sign) {
  c10::NoGradGuard g;
  const at::Tensor w = host.dense_weight();
  if (host.weight_is_in_out()) delta = delta.t();
  delta = delta.to(w.device(), w.scalar_type());
  host.assign_weight(sign > 0 ? w + delta : w - delta);
}

}  // namespace peft
