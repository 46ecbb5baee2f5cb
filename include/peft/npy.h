// NumPy .npy arrays as tensors (images and labels for image classification).
#pragma once

#include <ATen/core/Tensor.h>

#include <string>

namespace peft {

// Reads a C-ordered .npy of float32/float64/uint8/int32/int64/bool; errors name the file.
at::Tensor load_npy(const std::string& path);
// Writes a contiguous copy as .npy (version 1.0).
void save_npy(const std::string& path, const at::Tensor& t);

}  // namespace peft
