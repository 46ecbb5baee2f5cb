// HF PEFT 0.21's waverec2d (peft/tuners/waveft/waverec2d.py) for WaveFT's single level.
#pragma once

#include <ATen/ATen.h>

#include <string>

namespace peft {

// The 2-D inverse wavelet transform of one level: approximation cA and details cH, cV, cD,
// all [h, w], to [2h − L + 2, 2w − L + 2] for the family's filter length L: one stride-2
// transposed convolution with the four outer products of rec_lo / rec_hi (in the
// coefficients' dtype, as HF), then L − 2 cropped from each border.
at::Tensor waverec2d(const at::Tensor& cA, const at::Tensor& cH, const at::Tensor& cV, const at::Tensor& cD,
                     const std::string& family);

}  // namespace peft
