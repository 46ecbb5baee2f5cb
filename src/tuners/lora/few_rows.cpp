#include "tuners/lora/few_rows.h"

#include <ATen/ATen.h>
#include <c10/util/BFloat16.h>
#include <c10/util/SmallVector.h>

#include <cstring>

#include "util/autocast.h"
#include "util/cpu_features.h"

namespace peft {
namespace {

// 16 fp32 lanes as a GCC vector: AVX-512 registers in the AVX-512 copy below, SSE pairs in
// the portable one, from the same source.
typedef float Lanes __attribute__((vector_size(64)));

struct Job {
  const float* x;  // [rows, in], fp32
  const float *a, *b, *bias;
  const void* out;
  void* y;
  bool bf16;
  int64_t rows, in, rank, features;
  float scaling;
};

__attribute__((always_inline)) inline float dot(const float* p, const float* q, int64_t n) {
  Lanes acc = {};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    Lanes u, v;
    std::memcpy(&u, p + i, sizeof u);
    std::memcpy(&v, q + i, sizeof v);
    acc += u * v;
  }
  float s = 0;
  for (int k = 0; k < 16; ++k) s += acc[k];
  for (; i < n; ++i) s += p[i] * q[i];
  return s;
}

// t = x A^T for one row, then each output: out + (t . B[o] + bias[o]) * scaling.
__attribute__((always_inline)) inline void rows(const Job& j, float* t) {
  for (int64_t r = 0; r < j.rows; ++r) {
    const float* x = j.x + r * j.in;
    for (int64_t k = 0; k < j.rank; ++k) t[k] = dot(x, j.a + k * j.in, j.in);
    for (int64_t o = 0; o < j.features; ++o) {
      float lora = dot(t, j.b + o * j.rank, j.rank);
      if (j.bias) lora += j.bias[o];
      const int64_t e = r * j.features + o;
      const float scaled = lora * j.scaling;
      if (j.bf16) {
        const auto* in = static_cast<const c10::BFloat16*>(j.out);
        static_cast<c10::BFloat16*>(j.y)[e] = c10::BFloat16(static_cast<float>(in[e]) + scaled);
      } else {
        static_cast<float*>(j.y)[e] = static_cast<const float*>(j.out)[e] + scaled;
      }
    }
  }
}

__attribute__((target("avx512f"))) void rows_avx512(const Job& j, float* t) { rows(j, t); }
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
                         double scaling, const at::Tensor& out) {
  if (!fits(x, a, b, bias, out)) return {};
  const at::Tensor xf = x.to(at::kFloat).contiguous();
  const at::Tensor o = out.contiguous();
  at::Tensor y = at::empty_like(o);
  const Job j{xf.const_data_ptr<float>(), a.const_data_ptr<float>(), b.const_data_ptr<float>(),
              bias.defined() ? bias.const_data_ptr<float>() : nullptr, o.const_data_ptr(), y.data_ptr(),
              o.scalar_type() == at::kBFloat16, xf.numel() / a.size(1), a.size(1), a.size(0), b.size(0),
              static_cast<float>(scaling)};
  c10::SmallVector<float, 256> t(static_cast<size_t>(j.rank));  // on the stack up to rank 256
  if (cpu_has_avx512f()) rows_avx512(j, t.data());
  else rows_portable(j, t.data());
  return y.view(out.sizes());
}

}  // namespace peft
