// 4-bit decode speed on a CUDA GPU against its memory bandwidth, in one run.
//
// Usage: build/bench_quant_gemv_cuda [out_features in_features]...
//   (default: the Llama-3.1-8B layer shapes 4096x4096, 1024x4096, 14336x4096, 4096x14336)
//
// Prints: the device-to-device copy bandwidth (read + write of a 2 GiB buffer), then per
// shape, for NF4 (blocksize 64, double quantization) the fused 4-bit GEMV at 1, 4 and 8
// rows of bf16 x: GB/s of packed weight + scales streamed and the fraction of the copy
// bandwidth, beside the dense bf16 GEMV (cuBLAS) on the same shape; and the dequantize
// kernel (4-bit in, bf16 out) as GB/s read + written. Four weights are used in turn,
// together far larger than the L2 cache, so each call streams its weight from memory.
#include <ATen/ATen.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <utility>
#include <vector>

#include "quant/cuda_4bit.h"
#include "quant/linear_4bit.h"

using namespace peft::quant;

namespace {

void sync() { c10::impl::getDeviceGuardImpl(c10::DeviceType::CUDA)->synchronizeDevice(0); }

// Mean seconds per call over `reps` calls, after a warm-up of the same length.
double seconds_per_call(const std::function<void(int)>& fn, int reps) {
  for (int i = 0; i < reps; ++i) fn(i);
  sync();
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < reps; ++i) fn(i);
  sync();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / reps;
}

}  // namespace

int main(int argc, char** argv) {
  if (const std::string& why = load_cuda_4bit_kernels(); !why.empty()) {
    std::fprintf(stderr, "bench_quant_gemv_cuda: %s\n", why.c_str());
    return 1;
  }
  std::vector<std::pair<int64_t, int64_t>> shapes;
  for (int i = 1; i + 1 < argc; i += 2) shapes.emplace_back(std::atoll(argv[i]), std::atoll(argv[i + 1]));
  if (shapes.empty()) shapes = {{4096, 4096}, {1024, 4096}, {14336, 4096}, {4096, 14336}};
  const at::Device gpu("cuda:0");
  const auto gpu_opts = at::TensorOptions().device(gpu);

  at::Tensor src = at::empty({512 << 20}, gpu_opts.dtype(at::kFloat)).uniform_();
  at::Tensor dst = at::empty_like(src);
  const double copy_s = seconds_per_call([&](int) { dst.copy_(src); }, 10);
  const double copy_gbs = 2.0 * src.nbytes() / copy_s / 1e9;
  std::printf("device copy (read + write)  %7.1f GB/s\n", copy_gbs);
  src = dst = at::Tensor();

  const int kWeights = 4;
  for (auto [out, in] : shapes) {
    std::vector<at::Tensor> packed(kWeights), dense(kWeights);
    std::vector<std::shared_ptr<const Weight4bit>> w(kWeights);
    for (int i = 0; i < kWeights; ++i) {
      const at::Tensor full = at::randn({out, in}).to(at::kBFloat16);
      auto q = quantize_4bit(full, QuantType::kNF4, 64, true);
      packed[i] = q.packed.to(gpu);
      w[i] = std::make_shared<const Weight4bit>(std::move(q.state), at::kBFloat16);
      dense[i] = full.to(gpu);
      (void)w[i]->scales_on(gpu);
    }
    const double bytes_4bit = static_cast<double>(packed[0].nbytes()) + w[0]->scales.nbytes();
    std::printf("[%lld, %lld] NF4 bs 64: %.1f MB packed + scales, %.1f MB bf16\n", static_cast<long long>(out),
                static_cast<long long>(in), bytes_4bit / 1e6, dense[0].nbytes() / 1e6);
    for (int64_t rows : {1, 4, 8}) {
      const at::Tensor x = at::randn({rows, in}, gpu_opts.dtype(at::kBFloat16));
      const double s4 = seconds_per_call([&](int i) { gemv_4bit_cuda(x, packed[i % kWeights], *w[i % kWeights]); }, 200);
      const double sd = seconds_per_call([&](int i) { at::linear(x, dense[i % kWeights]); }, 200);
      std::printf("  rows %lld: 4-bit GEMV %7.2f us, %7.1f GB/s = %5.1f%% of copy; dense bf16 %7.2f us "
                  "(%7.1f GB/s); 4-bit / dense time %.2f\n",
                  static_cast<long long>(rows), s4 * 1e6, bytes_4bit / s4 / 1e9, 100.0 * bytes_4bit / s4 / 1e9 / copy_gbs,
                  sd * 1e6, dense[0].nbytes() / sd / 1e9, s4 / sd);
    }
    const double sq =
        seconds_per_call([&](int i) { dequantize_weight_cuda(packed[i % kWeights], *w[i % kWeights], at::kBFloat16); }, 100);
    const double moved = bytes_4bit + dense[0].nbytes();
    std::printf("  dequantize to bf16: %7.2f us, %7.1f GB/s read + written = %5.1f%% of copy\n", sq * 1e6,
                moved / sq / 1e9, 100.0 * moved / sq / 1e9 / copy_gbs);
  }
  return 0;
}
