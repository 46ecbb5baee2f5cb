// bnb's code tables, built exactly as bitsandbytes builds them, and the bucket bounds its
// quantizer compares with.
#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>

#include "quant/quant_internal.h"

namespace peft::quant {

const char* quant_type_name(QuantType type) { return type == QuantType::kNF4 ? "nf4" : "fp4"; }

bool valid_blocksize(int64_t blocksize) {
  return blocksize >= 32 && blocksize <= 4096 && (blocksize & (blocksize - 1)) == 0;
}

namespace {

// get_4bit_type("nf4"): Python floats (doubles) narrowed to fp32, so the literals are
// doubles here too (a float literal rounds the decimal once, not twice).
constexpr double kNF4[16] = {-1.0,
                             -0.6961928009986877,
                             -0.5250730514526367,
                             -0.39491748809814453,
                             -0.28444138169288635,
                             -0.18477343022823334,
                             -0.09105003625154495,
                             0.0,
                             0.07958029955625534,
                             0.16093020141124725,
                             0.24611230194568634,
                             0.33791524171829224,
                             0.44070982933044434,
                             0.5626170039176941,
                             0.7229568362236023,
                             1.0};
// get_4bit_type("fp4"): e2m1 magnitudes in bit order, then divided by their max (12) in
// fp32. bnb writes the sign-bit zero as Python's int -0, i.e. +0.0.
constexpr float kFP4Raw[16] = {0, 0.0625f, 8, 12, 4, 6, 2, 3, 0, -0.0625f, -8, -12, -4, -6, -2, -3};

std::vector<float> make_table(QuantType type) {
  std::vector<float> t(16);
  for (int i = 0; i < 16; ++i) {
    t[i] = type == QuantType::kNF4 ? static_cast<float>(kNF4[i]) : kFP4Raw[i] / 12.0f;
  }
  return t;
}

detail::Buckets make_buckets(QuantType type) {
  const std::vector<float>& code = code_table(type);
  // torch.argsort gives FP4's two zeros (codes 0 and 8) in index order: a stable sort.
  std::array<uint8_t, 16> order;
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](uint8_t a, uint8_t b) { return code[a] < code[b]; });
  detail::Buckets b{};
  for (int k = 0; k < 15; ++k) b.bounds[k] = (code[order[k]] + code[order[k + 1]]) / 2.0f;
  b.code_index = order;
  int zero_bucket = 0;  // torch.bucketize(0.0): the number of bounds below 0
  while (zero_bucket < 15 && b.bounds[zero_bucket] < 0.0f) ++zero_bucket;
  b.zero_code = order[zero_bucket];
  return b;
}

// create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8) with the same ATen
// ops bnb's Python runs (linspace, means, scaling by a Python float), so every value is
// bit-identical to the nested_quant_map bnb saves.
std::vector<float> make_dynamic_map() {
  std::vector<float> data;
  const int max_exponent_bits = 7, non_sign_bits = 7;
  for (int i = 0; i < max_exponent_bits; ++i) {
    const int64_t fraction_items = (int64_t{1} << (i + non_sign_bits - max_exponent_bits)) + 1;
    at::Tensor boundaries = at::linspace(0.1, 1, fraction_items, at::kFloat);
    at::Tensor means = (boundaries.slice(0, 0, -1) + boundaries.slice(0, 1)) / 2.0;
    const double scale = std::pow(10.0, -(max_exponent_bits - 1) + i);
    for (double sign : {1.0, -1.0}) {
      at::Tensor part = (means * (sign * scale)).contiguous();
      data.insert(data.end(), part.data_ptr<float>(), part.data_ptr<float>() + part.numel());
    }
  }
  data.push_back(0.0f);
  data.push_back(1.0f);
  std::sort(data.begin(), data.end());
  if (data.size() != 256) throw std::logic_error("dynamic map: expected 256 values");
  return data;
}

}  // namespace

const std::vector<float>& code_table(QuantType type) {
  static const std::vector<float> nf4 = make_table(QuantType::kNF4);
  static const std::vector<float> fp4 = make_table(QuantType::kFP4);
  return type == QuantType::kNF4 ? nf4 : fp4;
}

const std::vector<float>& dynamic_map() {
  static const std::vector<float> map = make_dynamic_map();
  return map;
}

namespace detail {

const Buckets& buckets(QuantType type) {
  static const Buckets nf4 = make_buckets(QuantType::kNF4);
  static const Buckets fp4 = make_buckets(QuantType::kFP4);
  return type == QuantType::kNF4 ? nf4 : fp4;
}

bool supported_dtype(at::ScalarType dtype) {
  return dtype == at::kFloat || dtype == at::kBFloat16 || dtype == at::kHalf;
}

std::string dtype_name(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat: return "float32";
    case at::kBFloat16: return "bfloat16";
    case at::kHalf: return "float16";
    default: throw std::invalid_argument(std::string("unsupported dtype ") + c10::toString(dtype));
  }
}

}  // namespace detail
}  // namespace peft::quant
