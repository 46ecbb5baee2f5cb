// WaveFT's wavelet filters: HF's Wavelet._compute_filters on its coefficient table, and
// which family names HF's WaveFTConfig accepts.
#include "tuners/waveft/wavelets.h"

#include <cmath>
#include <map>
#include <stdexcept>
#include <tuple>

namespace peft {

namespace {

// rec_lo = the coefficients (coiflets times √2, in double as HF); rec_hi[i] = (−1)^i rec_lo[L−1−i].
WaveletFilters make_filters(const std::string& family, const std::vector<double>& base) {
  const double scale = family.rfind("coif", 0) == 0 ? std::sqrt(2.0) : 1.0;
  WaveletFilters f;
  for (double c : base) f.rec_lo.push_back(c * scale);
  const size_t L = f.rec_lo.size();
  for (size_t i = 0; i < L; ++i) f.rec_hi.push_back(i % 2 == 0 ? f.rec_lo[L - 1 - i] : -f.rec_lo[L - 1 - i]);
  f.reduction = static_cast<int64_t>(L) - 2;
  return f;
}

// HF's WAVELET_REDUCTIONS keys: db1-db38, sym2-sym20, coif1-coif17.
bool hf_config_accepts(const std::string& family) {
  for (const auto& [prefix, lo, hi] : {std::tuple{"db", 1, 38}, std::tuple{"sym", 2, 20}, std::tuple{"coif", 1, 17}}) {
    const std::string p = prefix;
    if (family.rfind(p, 0) != 0 || family.size() == p.size() || family.size() > p.size() + 2) continue;
    const auto digits = family.substr(p.size());
    if (digits[0] == '0' || digits.find_first_not_of("0123456789") != std::string::npos) continue;
    const int n = std::stoi(digits);
    if (n >= lo && n <= hi) return true;
  }
  return false;
}

}  // namespace

const WaveletFilters& wavelet_filters(const std::string& family) {
  static const auto filters = [] {
    std::map<std::string, WaveletFilters> m;
    for (const auto& [name, base] : wavelet_base_coefficients()) m[name] = make_filters(name, base);
    return m;
  }();
  const auto it = filters.find(family);
  if (it == filters.end()) throw std::invalid_argument("WAVEFT: " + wavelet_family_refusal(family));
  return it->second;
}

std::string wavelet_family_refusal(const std::string& family) {
  for (const auto& [name, _] : wavelet_base_coefficients())
    if (name == family) return "";
  if (!hf_config_accepts(family))
    return "'wavelet_family' must be one of HF's families (db1-db38, sym2-sym20, coif1-coif17), got '" + family + "'";
  return "'wavelet_family' '" + family +
         "' has no working filter in HF PEFT's waverec2d (db1-db10, sym2-sym10, coif1-coif4; its coif5 "
         "does not reconstruct the layer's shape)";
}

}  // namespace peft
