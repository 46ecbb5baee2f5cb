// One decode step's attention (one query over the KV cache) on CPU, by cache length.
//
// Usage: build/bench_decode_attention [threads]
//
// For the SmolLM2-360M head layout (15 query heads over 5 key/value heads of 64, batch 1)
// and the Llama-3.2-1B one (32 over 8), fp32 and bf16, at 256 to 8192 cached positions:
// microseconds per layer of decode_attention (its widest body on this CPU), of its AVX2 and
// portable bodies, and of ATen's SDPA on
// the same tensors (grouped heads, no mask), best of 50 calls each. The cache is
// [b, kv_h, T, d] contiguous, as the generation loop's concatenated cache is.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>

#include "models/decode_attention.h"
#include "timing.h"

namespace {

double best_us(const std::function<void()>& fn, int reps) { return peft::bench::best_seconds(fn, reps) * 1e6; }

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1) at::set_num_threads(std::atoi(argv[1]));
  c10::NoGradGuard no_grad;
  std::printf("threads %d; microseconds per layer (best of 50)\n", at::get_num_threads());
  std::printf("%-6s %-5s %6s %10s %10s %10s %10s %9s\n", "heads", "dtype", "T", "ours", "AVX2", "portable",
              "ATen SDPA", "SDPA/ours");
  struct Layout {
    int64_t heads, kv_heads;
  };
  for (const Layout l : {Layout{15, 5}, Layout{32, 8}}) {
    for (const auto dt : {at::kFloat, at::kBFloat16}) {
      for (const int64_t len : {256, 1280, 4096, 8192}) {
        const at::Tensor q = at::randn({1, l.heads, 1, 64}).to(dt);
        const at::Tensor k = at::randn({1, l.kv_heads, len, 64}).to(dt);
        const at::Tensor v = at::randn({1, l.kv_heads, len, 64}).to(dt);
        const double scale = 1.0 / std::sqrt(64.0);
        const double ours = best_us([&] { peft::decode_attention(q, k, v, {}, scale); }, 50);
        const double avx2 = best_us([&] { peft::decode_attention(q, k, v, {}, scale, peft::DecodeBody::kAvx2); }, 50);
        const double portable = best_us([&] { peft::decode_attention(q, k, v, {}, scale, peft::DecodeBody::kPortable); }, 50);
        const double sdpa = best_us(
            [&] { at::scaled_dot_product_attention(q, k, v, {}, 0.0, false, scale, /*enable_gqa=*/true); }, 50);
        std::printf("%2lld/%-3lld %-5s %6lld %10.1f %10.1f %10.1f %10.1f %9.2f\n", static_cast<long long>(l.heads),
                    static_cast<long long>(l.kv_heads), dt == at::kFloat ? "fp32" : "bf16",
                    static_cast<long long>(len), ours, avx2, portable, sdpa, sdpa / ours);
      }
    }
  }
  return 0;
}
