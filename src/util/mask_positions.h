// Position ids of left-padded rows, counted from the attention mask as transformers'
// generate does: each real position its count of real positions before it, padding 1.
#pragma once

#include <ATen/ATen.h>

namespace peft {

inline at::Tensor positions_from_mask(const at::Tensor& mask) {
  return (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1);
}

}  // namespace peft
