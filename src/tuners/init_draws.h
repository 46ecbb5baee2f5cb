// Initial draws the tuners share with PyTorch's layer inits, so a seed gives HF's values.
#pragma once

#include <ATen/ATen.h>

#include <cmath>

namespace peft {

// nn.init.kaiming_uniform_(t, a=sqrt(5)) on [rows, cols] (nn.Linear's weight init):
// U(-b, b), b = 1 / sqrt(cols).
inline at::Tensor kaiming_uniform_sqrt5(int64_t rows, int64_t cols, at::Generator& gen) {
  const double bound = 1.0 / std::sqrt(static_cast<double>(cols));
  return at::empty({rows, cols}, at::TensorOptions(at::kFloat)).uniform_(-bound, bound, gen);
}

}  // namespace peft
