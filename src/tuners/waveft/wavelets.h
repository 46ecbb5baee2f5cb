// The wavelet filters of HF PEFT 0.21's WaveFT (peft/tuners/waveft/wavelet.py, constants.py).
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace peft {

// Each family HF can reconstruct with: its low-pass reconstruction coefficients before the
// coiflet √2 scaling (wavelet_coeffs.cpp).
const std::vector<std::pair<std::string, std::vector<double>>>& wavelet_base_coefficients();

// HF's reconstruction filters for `family` (rec_lo, rec_hi, as doubles) and the padding
// (HF's WAVELET_REDUCTIONS: filter length − 2) added to each side before reconstructing.
struct WaveletFilters {
  std::vector<double> rec_lo, rec_hi;
  int64_t reduction;
};
const WaveletFilters& wavelet_filters(const std::string& family);

// "" when WaveFT can use `family`; else why not: not one of HF's config names (db1-db38,
// sym2-sym20, coif1-coif17), or one HF accepts but has no working filter for.
std::string wavelet_family_refusal(const std::string& family);

}  // namespace peft
