// 4-bit quantization as bitsandbytes' CPU path does it (backends/default/ops.py,
// quantize_4bit): the same fp32 arithmetic, the same rounding, the same ties.
#include <ATen/ATen.h>

#include <cmath>
#include <stdexcept>

#include "quant/quant_internal.h"
#include "util/parallel_for.h"

namespace peft::quant {
namespace {

constexpr float kMinScale = 1e-38f;  // absmax.clamp(min=1e-38): all-zero blocks divide by it

// torch.max / torch.clamp propagate NaN; std::max would drop it.
inline float clamp_min_nan(float v, float lo) { return std::isnan(v) ? v : (v < lo ? lo : v); }
inline float clamp_unit_nan(float v) { return std::isnan(v) ? v : (v < -1.0f ? -1.0f : (v > 1.0f ? 1.0f : v)); }

// torch.bucketize(v, bounds) (right=False): how many bounds b fail `b >= v`, i.e. the
// first bucket whose upper bound is >= v, so a value on a midpoint takes the lower code;
// NaN fails every comparison and lands in the last bucket. Branchless binary search.
inline int bucket(const std::array<float, 15>& b, float v) {
  int i = 0;
  i += !(b[i + 7] >= v) ? 8 : 0;
  i += !(b[i + 3] >= v) ? 4 : 0;
  i += !(b[i + 1] >= v) ? 2 : 0;
  i += !(b[i] >= v) ? 1 : 0;
  return i;
}

template <typename T>
float max_abs(const T* x, int64_t len) {
  float m = 0.0f;
  for (int64_t i = 0; i < len; ++i) {
    const float a = std::fabs(static_cast<float>(x[i]));
    if (std::isnan(a)) return a;
    m = a > m ? a : m;
  }
  return m;
}

// One block at an even element offset, so it owns whole bytes. Full blocks multiply by
// the reciprocal of the (clamped) absmax and store the unclamped absmax; bnb handles the
// short last block apart: it divides by the clamped absmax and stores that.
template <typename T>
void quantize_block(const T* x, int64_t len, bool last_short, const detail::Buckets& bk, uint8_t* out,
                    float* absmax) {
  const float amax = max_abs(x, len);
  const float clamped = clamp_min_nan(amax, kMinScale);
  *absmax = last_short ? clamped : amax;
  const float recip = 1.0f / clamped;
  auto code = [&](int64_t i) -> uint8_t {
    const float v = static_cast<float>(x[i]);
    return bk.code_index[bucket(bk.bounds, clamp_unit_nan(last_short ? v / clamped : v * recip))];
  };
  for (int64_t i = 0; i < len; i += 2) {
    const uint8_t lo = i + 1 < len ? code(i + 1) : bk.zero_code;  // the pad scales to 0
    out[i / 2] = static_cast<uint8_t>(code(i) << 4 | lo);
  }
}

template <typename T>
void quantize_all(const T* x, int64_t n, int64_t blocksize, const detail::Buckets& bk, uint8_t* out,
                  float* absmax) {
  const int64_t blocks = (n + blocksize - 1) / blocksize;
  at::parallel_for(0, blocks, std::max<int64_t>(1, 32768 / blocksize), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t start = b * blocksize, len = std::min(blocksize, n - start);
      quantize_block(x + start, len, len < blocksize, bk, out + start / 2, absmax + b);
    }
  });
}

// compress_statistics: offset = absmax.mean() (ATen's own reduction, so the same bits as
// bnb's torch call), then quantize_blockwise(absmax - offset, blocksize=256).
void compress_statistics(const at::Tensor& absmax, QuantState4bit& st) {
  const int64_t blocks = absmax.numel();
  st.offset = absmax.mean().item<float>();
  at::Tensor centered = at::empty({blocks}, at::kFloat);
  const float* a = absmax.data_ptr<float>();
  float* c = centered.data_ptr<float>();
  for (int64_t i = 0; i < blocks; ++i) c[i] = a[i] - st.offset;
  st.nested = true;
  st.nested_blocksize = kNestedBlocksize;
  st.absmax = at::empty({blocks}, at::kByte);
  st.nested_absmax = at::empty({(blocks + kNestedBlocksize - 1) / kNestedBlocksize}, at::kFloat);
  detail::quantize_blockwise_8bit(c, blocks, kNestedBlocksize, st.absmax.data_ptr<uint8_t>(),
                                  st.nested_absmax.data_ptr<float>());
  st.nested_code = at::tensor(dynamic_map(), at::kFloat);
}

}  // namespace

Quantized4bit quantize_4bit(const at::Tensor& w, QuantType type, int64_t blocksize, bool double_quant) {
  if (!valid_blocksize(blocksize)) {
    throw std::invalid_argument("quantize_4bit: blocksize " + std::to_string(blocksize) +
                                " is not one of bitsandbytes' 32, 64, 128, 256, 512, 1024, 2048, 4096");
  }
  if (!w.defined() || !detail::supported_dtype(w.scalar_type())) {
    throw std::invalid_argument(std::string("quantize_4bit: only fp32, bf16 and fp16 weights can be quantized, got ") +
                                (w.defined() ? c10::toString(w.scalar_type()) : "an undefined tensor"));
  }
  const at::Tensor x = w.to(at::kCPU).contiguous();
  const int64_t n = x.numel();
  Quantized4bit q;
  QuantState4bit& st = q.state;
  st.type = type;
  st.blocksize = blocksize;
  st.shape = x.sizes().vec();
  st.dtype = x.scalar_type();
  st.code = at::tensor(code_table(type), at::kFloat);
  q.packed = at::empty({(n + 1) / 2, 1}, at::kByte);
  at::Tensor absmax = at::empty({st.blocks()}, at::kFloat);
  const detail::Buckets& bk = detail::buckets(type);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "quantize_4bit", [&] {
    quantize_all(x.data_ptr<scalar_t>(), n, blocksize, bk, q.packed.data_ptr<uint8_t>(), absmax.data_ptr<float>());
  });
  if (double_quant) {
    compress_statistics(absmax, st);
  } else {
    st.absmax = absmax;
  }
  if (!w.device().is_cpu()) {
    for (at::Tensor* t : {&q.packed, &st.absmax, &st.code, &st.nested_absmax, &st.nested_code}) {
      if (t->defined()) *t = t->to(w.device());
    }
  }
  return q;
}

}  // namespace peft::quant
