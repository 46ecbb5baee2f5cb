#include "tuners/lora/few_rows.h"

#include <ATen/ATen.h>
#include <c10/util/SmallVector.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "util/autocast.h"
#include "util/cpu_features.h"

// The helpers below return vectors without a target attribute; they are always inlined
// into the copies that have one, so no call passes vectors across that ABI.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace peft {
namespace {

// 16 fp32 lanes as a GCC vector: AVX-512 registers in the AVX-512 copy below, AVX2 or SSE
// pairs in the others, from the same source.
typedef float Lanes __attribute__((vector_size(64)));
typedef int32_t Ints __attribute__((vector_size(64)));
typedef uint32_t Uints __attribute__((vector_size(64)));
typedef uint16_t Halves __attribute__((vector_size(32)));

struct Job {
  const void* x;  // [rows, in], fp32 or bf16 as out
  const float *a, *b, *bias;
  const void* out;
  void* y;
  bool bf16;
  int64_t rows, in, rank, features;
  float scaling;
};

__attribute__((always_inline)) inline Lanes widen(Halves h) {
  return (Lanes)(__builtin_convertvector(h, Ints) << 16);  // bf16 bits are fp32's top half
}

// fp32 to bf16 bits as c10::BFloat16 rounds: to nearest even, every NaN to 0x7FC0.
__attribute__((always_inline)) inline Halves narrow(Lanes v) {
  const Uints u = (Uints)v;
  const Uints rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16;
  const Uints nan = (Uints)(v != v);
  return __builtin_convertvector((rounded & ~nan) | (0x7FC0 & nan), Halves);
}

// The first n (<= 16) elements of p as lanes (the others zero), and back: whole vectors,
// then pieces of 8 and 4 (fixed-size copies, so vector moves; rank 8 and 4 take these),
// then single elements.
template <class V, class T>
__attribute__((always_inline)) inline V load_first(const T* p, int64_t n) {
  V v = {};
  if (n >= 16) {
    std::memcpy(&v, p, sizeof v);
    return v;
  }
  auto* bytes = reinterpret_cast<char*>(&v);
  int64_t i = 0;
  if (n & 8) std::memcpy(bytes, p, 8 * sizeof(T)), i = 8;
  if (n & 4) std::memcpy(bytes + i * sizeof(T), p + i, 4 * sizeof(T)), i += 4;
  for (; i < n; ++i) v[i] = p[i];
  return v;
}
template <class V, class T>
__attribute__((always_inline)) inline void store_first(T* p, V v, int64_t n) {
  if (n >= 16) {
    std::memcpy(p, &v, sizeof v);
    return;
  }
  const auto* bytes = reinterpret_cast<const char*>(&v);
  int64_t i = 0;
  if (n & 8) std::memcpy(p, bytes, 8 * sizeof(T)), i = 8;
  if (n & 4) std::memcpy(p + i, bytes + i * sizeof(T), 4 * sizeof(T)), i += 4;
  for (; i < n; ++i) p[i] = v[i];
}

// Lane i: the sum of v[i]'s 16 lanes. Halves are added pairwise in four rounds, each output
// lane's sum in one fixed order (45 shuffles and adds instead of 16 x 15 scalar adds).
__attribute__((always_inline)) inline Lanes sums16(const Lanes* v) {
  Lanes w[8], x[4], y[2];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i)
    w[i] = __builtin_shufflevector(v[2 * i], v[2 * i + 1], 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) +
           __builtin_shufflevector(v[2 * i], v[2 * i + 1], 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i)
    x[i] = __builtin_shufflevector(w[2 * i], w[2 * i + 1], 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27) +
           __builtin_shufflevector(w[2 * i], w[2 * i + 1], 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
#pragma GCC unroll 2
  for (int i = 0; i < 2; ++i)
    y[i] = __builtin_shufflevector(x[2 * i], x[2 * i + 1], 0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29) +
           __builtin_shufflevector(x[2 * i], x[2 * i + 1], 2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31);
  return __builtin_shufflevector(y[0], y[1], 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30) +
         __builtin_shufflevector(y[0], y[1], 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
}

__attribute__((always_inline)) inline Lanes load_x(const Job& j, int64_t r, int64_t i, int64_t n) {
  if (!j.bf16) return load_first<Lanes>(static_cast<const float*>(j.x) + r * j.in + i, n);
  return widen(load_first<Halves>(static_cast<const uint16_t*>(j.x) + r * j.in + i, n));
}

// The dot product of x row r with p[0, in), as 16 lanes still to be summed.
__attribute__((always_inline)) inline Lanes dot_lanes(const Job& j, int64_t r, const float* p) {
  Lanes even = {}, odd = {};
  int64_t i = 0;
  for (; i + 32 <= j.in; i += 32) {
    even += load_x(j, r, i, 16) * load_first<Lanes>(p + i, 16);
    odd += load_x(j, r, i + 16, 16) * load_first<Lanes>(p + i + 16, 16);
  }
  for (; i < j.in; i += 16) {
    const int64_t m = std::min<int64_t>(16, j.in - i);
    even += load_x(j, r, i, m) * load_first<Lanes>(p + i, m);
  }
  return even + odd;
}

// t = x_r A^T for one row, 16 ranks at a time: each rank's dot product in lanes, then the
// 16 summed across at once. Lanes past the last rank stay zero.
__attribute__((always_inline)) inline void x_times_a(const Job& j, int64_t r, float* t) {
  for (int64_t k0 = 0; k0 < j.rank; k0 += 16) {
    const int64_t n = std::min<int64_t>(16, j.rank - k0);
    Lanes dots[16] = {};
    for (int64_t k = 0; k < n; ++k) dots[k] = dot_lanes(j, r, j.a + (k0 + k) * j.in);
    const Lanes sums = sums16(dots);
    std::memcpy(t + k0, &sums, sizeof sums);
  }
}

// B rows o0 .. o0 + 15 times t (rank <= 16, zero-padded to 16): v[i] = t * B[o0 + i], its
// lanes still to be summed. A group of fewer features repeats its last row in the spare
// lanes (branch-free, so v stays in registers); those lanes are not stored.
__attribute__((always_inline)) inline void products_small_rank(const Job& j, int64_t o0, int64_t n, Lanes tv,
                                                               Lanes* v) {
#pragma GCC unroll 16
  for (int i = 0; i < 16; ++i)
    v[i] = tv * load_first<Lanes>(j.b + (o0 + std::min<int64_t>(i, n - 1)) * j.rank, j.rank);
}

// Any rank: 16 at a time.
__attribute__((always_inline)) inline void products_any_rank(const Job& j, int64_t o0, int64_t n, const float* t,
                                                             Lanes* v) {
  for (int64_t i = 0; i < 16; ++i) {
    const float* row = j.b + (o0 + std::min<int64_t>(i, n - 1)) * j.rank;
    Lanes sum = {};
    for (int64_t k0 = 0; k0 < j.rank; k0 += 16) {
      Lanes tv;
      std::memcpy(&tv, t + k0, sizeof tv);
      sum += tv * load_first<Lanes>(row + k0, std::min<int64_t>(16, j.rank - k0));
    }
    v[i] = sum;
  }
}

// Outputs o0 .. o0 + n - 1 of row r: out + (sum of v[i] + bias) * scaling, rounded once.
__attribute__((always_inline)) inline void store_outputs(const Job& j, int64_t r, int64_t o0, int64_t n,
                                                         const Lanes* v) {
  Lanes lora = sums16(v);
  if (j.bias) lora += load_first<Lanes>(j.bias + o0, n);
  lora *= j.scaling;
  const int64_t e = r * j.features + o0;
  if (j.bf16) {
    const Halves o = load_first<Halves>(static_cast<const uint16_t*>(j.out) + e, n);
    store_first(static_cast<uint16_t*>(j.y) + e, narrow(widen(o) + lora), n);
  } else {
    store_first(static_cast<float*>(j.y) + e, load_first<Lanes>(static_cast<const float*>(j.out) + e, n) + lora, n);
  }
}

// t [rows, rank rounded up to 16] = x A^T, then 16 features at a time for every row, so a
// group's rows of B stay in cache while the rows of x pass them.
__attribute__((always_inline)) inline void rows(const Job& j, float* t) {
  const int64_t stride = (j.rank + 15) / 16 * 16;
  for (int64_t r = 0; r < j.rows; ++r) x_times_a(j, r, t + r * stride);
  for (int64_t o0 = 0; o0 < j.features; o0 += 16) {
    const int64_t n = std::min<int64_t>(16, j.features - o0);
    for (int64_t r = 0; r < j.rows; ++r) {
      Lanes v[16];
      if (j.rank <= 16) {
        Lanes tv;
        std::memcpy(&tv, t + r * stride, sizeof tv);
        products_small_rank(j, o0, n, tv, v);
      } else {
        products_any_rank(j, o0, n, t + r * stride, v);
      }
      store_outputs(j, r, o0, n, v);
    }
  }
}

__attribute__((target("avx512f"))) void rows_avx512(const Job& j, float* t) { rows(j, t); }
__attribute__((target("avx2,fma"))) void rows_avx2(const Job& j, float* t) { rows(j, t); }
void rows_portable(const Job& j, float* t) { rows(j, t); }

bool fits(const at::Tensor& x, const at::Tensor& a, const at::Tensor& b, const at::Tensor& bias,
          const at::Tensor& out) {
  const auto cpu_f32 = [](const at::Tensor& t) {
    return t.device().is_cpu() && t.scalar_type() == at::kFloat && t.is_contiguous();
  };
  if (!cpu_f32(a) || !cpu_f32(b) || a.dim() != 2 || b.dim() != 2 || b.size(1) != a.size(0)) return false;
  if (bias.defined() && (!cpu_f32(bias) || bias.numel() != b.size(0))) return false;
  const auto dt = x.scalar_type();
  if (!x.device().is_cpu() || !out.device().is_cpu() || (dt != at::kFloat && dt != at::kBFloat16) ||
      out.scalar_type() != dt || x.dim() < 1 || x.size(-1) != a.size(1) || out.size(-1) != b.size(0))
    return false;
  const int64_t rows = x.numel() / std::max<int64_t>(1, a.size(1));
  if (rows < 1 || rows > kLoraFewRows || out.numel() != rows * b.size(0)) return false;
  return plain_cpu_inference(x, a, b, out, bias);
}

}  // namespace

at::Tensor lora_few_rows(const at::Tensor& x, const at::Tensor& a, const at::Tensor& b, const at::Tensor& bias,
                         double scaling, const at::Tensor& out, LoraFewRowsBody body) {
  if (!fits(x, a, b, bias, out)) return {};
  const at::Tensor xc = x.contiguous();
  const at::Tensor o = out.contiguous();
  at::Tensor y = at::empty_like(o);
  const Job j{xc.const_data_ptr(), a.const_data_ptr<float>(), b.const_data_ptr<float>(),
              bias.defined() ? bias.const_data_ptr<float>() : nullptr, o.const_data_ptr(), y.data_ptr(),
              o.scalar_type() == at::kBFloat16, xc.numel() / a.size(1), a.size(1), a.size(0), b.size(0),
              static_cast<float>(scaling)};
  // x A^T, the rank rounded up to whole vectors; on the stack up to 16 rows of rank 16.
  c10::SmallVector<float, 256> t(static_cast<size_t>(j.rows * ((j.rank + 15) / 16 * 16)));
  if (body == LoraFewRowsBody::kBest && cpu_has_avx512f()) rows_avx512(j, t.data());
  else if (body != LoraFewRowsBody::kPortable && cpu_has_avx2_fma()) rows_avx2(j, t.data());
  else rows_portable(j, t.data());
  return y.view(out.sizes());
}

}  // namespace peft
