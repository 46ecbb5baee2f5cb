// 4-bit decode speed against the machine's memory bandwidth, in one run.
//
// Usage: build/bench_quant_gemv [out_features in_features [threads]]   (default 11008 4096)
//
// Prints: a STREAM-like copy's bandwidth (read + write of a 1 GiB fp32 buffer, best of 5);
// for NF4 (blocksize 64, bf16 compute) the fused 4-bit GEMV at 1, 4, 8 and 16 rows: GB/s of
// packed weight + scales streamed, as a fraction of the copy bandwidth, and GFLOP/s, beside
// the dense bf16 GEMV; the same with fp32 compute (the path of CPUs without AVX512-BF16),
// against dequantize + fp32 GEMM beyond the fused kernel's rows; the whole weight
// dequantized by each body (best, AVX2, portable); and at 256 rows (training, prefill) the
// 4-bit product against the dense bf16 GEMM. Four weights are used in turn, far larger than
// the caches together, so every call streams its weight from memory.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cstdio>
#include <cstdlib>

#include "quant/dequantize_fast.h"
#include "quant/gemv_4bit.h"
#include "quant/linear_4bit.h"
#include "timing.h"
#include "util/allocator.h"

using namespace peft::quant;
using peft::bench::best_seconds;

int main(int argc, char** argv) {
  const int64_t out = argc > 2 ? std::atoll(argv[1]) : 11008, in = argc > 2 ? std::atoll(argv[2]) : 4096;
  if (argc > 3) at::set_num_threads(std::atoi(argv[3]));
  peft::keep_freed_memory();  // as the peft binary does: a dequantized weight reuses freed memory
  std::printf("threads %d, weight [%lld, %lld]\n", at::get_num_threads(), static_cast<long long>(out),
              static_cast<long long>(in));
  // Several weights back to back, so consecutive calls never find the last one in cache.
  const int kWeights = 4;
  at::Tensor src = at::empty({256 << 20}, at::kFloat).uniform_();
  at::Tensor dst = at::empty_like(src);
  const double copy_s = best_seconds([&] { dst.copy_(src); }, 5);
  const double copy_gbs = 2.0 * src.nbytes() / copy_s / 1e9;
  std::printf("copy (read + write)      %7.1f GB/s\n", copy_gbs);

  std::vector<at::Tensor> packed(kWeights), dense(kWeights);
  std::vector<std::shared_ptr<const Weight4bit>> w(kWeights);
  for (int i = 0; i < kWeights; ++i) {
    const at::Tensor full = at::randn({out, in}).to(at::kBFloat16);
    auto q = quantize_4bit(full, QuantType::kNF4, 64, false);
    packed[i] = q.packed;
    w[i] = std::make_shared<const Weight4bit>(std::move(q.state), at::kBFloat16);
    dense[i] = full;
  }
  const double bytes_4bit = static_cast<double>(packed[0].nbytes()) + w[0]->scales.nbytes();
  int k = 0;
  for (int64_t rows : {1, 4, 8, 16}) {
    const at::Tensor x = at::randn({rows, in});
    const at::Tensor xb = x.to(at::kBFloat16);
    const double fused = best_seconds([&] { gemv_4bit(x, packed[k % kWeights], *w[k % kWeights]); ++k; }, 20);
    const double bf16 = best_seconds([&] { at::linear(xb, dense[k++ % kWeights]); }, 20);
    std::printf("rows %3lld: fused 4-bit GEMV %7.3f ms, %5.1f GB/s of 4-bit weight = %5.1f%% of copy bandwidth; "
                "%4.0f GFLOP/s; dense bf16 GEMV %7.3f ms (%5.1f GB/s)\n",
                static_cast<long long>(rows), fused * 1e3, bytes_4bit / fused / 1e9,
                100.0 * bytes_4bit / fused / 1e9 / copy_gbs, 2e-9 * rows * out * in / fused, bf16 * 1e3,
                dense[0].nbytes() / bf16 / 1e9);
  }
  // fp32 compute (also what bf16 compute takes on CPUs without AVX512-BF16): fused against
  // dequantize + fp32 GEMM, the latter where the fused kernel stops.
  std::vector<std::shared_ptr<const Weight4bit>> w32(kWeights);
  for (int i = 0; i < kWeights; ++i) w32[i] = std::make_shared<const Weight4bit>(w[i]->state, at::kFloat);
  for (int64_t rows : {1, 4, 8, 16}) {
    const at::Tensor x = at::randn({rows, in});
    const double fused = best_seconds([&] { gemv_4bit(x, packed[k % kWeights], *w32[k % kWeights]); ++k; }, 10);
    std::printf("fp32 compute, rows %3lld: fused 4-bit GEMV %7.3f ms (%4.0f GFLOP/s)", static_cast<long long>(rows),
                fused * 1e3, 2e-9 * rows * out * in / fused);
    if (rows > kGemvMaxRows) {
      const double q4 = best_seconds([&] { linear_4bit(x, packed[k % kWeights], w32[k % kWeights], {}); ++k; }, 5);
      std::printf("; dequantize + fp32 GEMM %7.3f ms", q4 * 1e3);
    }
    std::printf("\n");
  }
  // The whole weight dequantized (what prefill and training pay per product), by body.
  for (const auto dt : {at::kBFloat16, at::kFloat}) {
    at::Tensor full = at::empty({out, in}, dt);
    std::printf("dequantize to %s:", dt == at::kFloat ? "fp32" : "bf16");
    for (const auto body : {DequantBody::kBest, DequantBody::kAvx2, DequantBody::kPortable}) {
      const double s = best_seconds(
          [&] {
            const int i = k++ % kWeights;
            dequantize_rows_fast(packed[i], w[i]->state, w[i]->scales, full, body);
          },
          5);
      const char* name = body == DequantBody::kBest ? "best" : body == DequantBody::kAvx2 ? "AVX2" : "portable";
      std::printf("  %s %6.2f ms (%5.1f GB/s written)", name, s * 1e3, full.nbytes() / s / 1e9);
    }
    std::printf("\n");
  }
  // Training and prefill shapes: tiles of the weight dequantized into cache, then GEMM.
  for (int64_t rows : {256}) {
    const at::Tensor xb = at::randn({rows, in}).to(at::kBFloat16);
    const double q4 = best_seconds([&] { linear_4bit(xb, packed[k % kWeights], w[k % kWeights], {}); ++k; }, 5);
    const double bf16 = best_seconds([&] { at::linear(xb, dense[k++ % kWeights]); }, 5);
    std::printf("rows %3lld: 4-bit (dequantized tiles + bf16 GEMM) %7.2f ms, dense bf16 GEMM %7.2f ms: %.2fx\n",
                static_cast<long long>(rows), q4 * 1e3, bf16 * 1e3, q4 / bf16);
  }
  return 0;
}
