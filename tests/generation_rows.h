// Prompt rows of a left-padded batch, as generate() takes them and returns them.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

namespace peft::test {

// The rows of `ids` [batch, len] without the positions `mask` marks 0 (none where
// undefined; positions past the mask's length are kept: generated tokens).
inline std::vector<std::vector<int64_t>> unpadded(const at::Tensor& ids, const at::Tensor& mask) {
  std::vector<std::vector<int64_t>> rows;
  for (int64_t r = 0; r < ids.size(0); ++r) {
    rows.emplace_back();
    for (int64_t t = 0; t < ids.size(1); ++t)
      if (!mask.defined() || t >= mask.size(1) || mask[r][t].item<int64_t>()) rows.back().push_back(ids[r][t].item<int64_t>());
  }
  return rows;
}

}  // namespace peft::test
