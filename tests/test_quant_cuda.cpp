// The 4-bit layer's CUDA kernels (libpeft_cuda.so) against the host paths, which
// test_quant checks byte for byte against bitsandbytes. Label `cuda`: these need a GPU and
// fail without one (CI has none; run them with `ctest -L cuda` on a GPU machine).
#include <ATen/ATen.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>

#include <tuple>

#include "quant/cuda_4bit.h"
#include "quant/gemv_4bit.h"
#include "quant/linear_4bit.h"

namespace peft::quant {
namespace {

const at::Device kGpu("cuda:0");

class Cuda4bit : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(load_cuda_4bit_kernels(), "");
    ASSERT_GT(at::detail::getCUDAHooks().deviceCount(), 0) << "these tests need a CUDA device";
  }
};

struct Case {
  QuantType type;
  int64_t blocksize;
  bool nested;
  int64_t rows, cols;
};

// Blocks that do and do not divide a row, an odd element count (a half-used last byte),
// a blocksize longer than the whole weight, an LLM-sized layer, and 4128-wide rows (the
// GEMV lanes' last round of unrolled loads is partial). Element counts that are and
// are not multiples of 8 take dequantization's wide and byte-wise kernels.
const Case kCases[] = {{QuantType::kNF4, 64, false, 64, 96},   {QuantType::kFP4, 32, true, 33, 47},
                       {QuantType::kNF4, 4096, true, 17, 100}, {QuantType::kFP4, 128, false, 40, 256},
                       {QuantType::kNF4, 64, true, 2048, 4096}, {QuantType::kNF4, 64, false, 24, 4128}};

double rel(const at::Tensor& a, const at::Tensor& b) {
  return ((a.cpu().to(at::kDouble) - b.cpu().to(at::kDouble)).abs().max() / b.cpu().to(at::kDouble).abs().max())
      .item<double>();
}

TEST_F(Cuda4bit, DequantizeEqualsTheHostBitForBit) {
  at::manual_seed(0);
  for (const Case& c : kCases) {
    auto q = quantize_4bit(at::randn({c.rows, c.cols}), c.type, c.blocksize, c.nested);
    const Weight4bit w(q.state, at::kFloat);
    const at::Tensor on_gpu = q.packed.to(kGpu);
    for (auto dtype : {at::kFloat, at::kBFloat16, at::kHalf}) {
      const at::Tensor want = dequantize_4bit(q.packed, q.state, dtype);
      const at::Tensor got = dequantize_weight_cuda(on_gpu, w, dtype);
      ASSERT_EQ(got.device(), on_gpu.device());
      EXPECT_TRUE(at::equal(got.cpu().view(want.sizes()), want))
          << quant_type_name(c.type) << " bs " << c.blocksize << " " << c.rows << "x" << c.cols << " " << dtype;
      EXPECT_TRUE(at::equal(dequantize_weight(on_gpu, w, dtype).cpu().view(want.sizes()), want));
    }
  }
}

// The decode kernel sums 8 products, scales the sum once, and adds up the rest in fp32:
// against float64, 1e-5 of the largest output is ~100 fp32 ulp (as test_quant_kernels
// bounds the host kernel).
TEST_F(Cuda4bit, GemvEqualsDequantizeThenMultiplyForEveryRowCountAndDtype) {
  at::manual_seed(1);
  for (const Case& c : kCases) {
    if (c.cols % 32) continue;
    auto q = quantize_4bit(at::randn({c.rows, c.cols}), c.type, c.blocksize, c.nested);
    const Weight4bit w(q.state, at::kFloat);
    const at::Tensor packed = q.packed.to(kGpu);
    const at::Tensor dense = dequantize_4bit(q.packed, q.state, at::kFloat).view({c.rows, c.cols}).to(at::kDouble);
    for (auto dtype : {at::kFloat, at::kBFloat16, at::kHalf}) {
      for (int64_t rows = 1; rows <= kGemvMaxRows; ++rows) {
        const at::Tensor x = at::randn({rows, c.cols}).to(dtype);
        const at::Tensor xg = x.to(kGpu);
        ASSERT_TRUE(gemv_4bit_cuda_applies(xg, packed, w));
        const at::Tensor got = gemv_4bit_cuda(xg, packed, w);
        ASSERT_EQ(got.scalar_type(), at::kFloat);
        const at::Tensor want = at::matmul(x.to(at::kDouble), dense.t());
        EXPECT_LE(rel(got, want), 1e-5) << c.rows << "x" << c.cols << " " << dtype << " rows " << rows;
      }
    }
  }
}

TEST_F(Cuda4bit, GemvDoesNotApplyToHostTensorsOddWidthsOrManyRows) {
  auto q = quantize_4bit(at::randn({8, 96}), QuantType::kNF4, 32, false);
  const Weight4bit w(q.state, at::kFloat);
  const at::Tensor packed = q.packed.to(kGpu);
  EXPECT_TRUE(gemv_4bit_cuda_applies(at::randn({1, 96}, kGpu), packed, w));
  EXPECT_FALSE(gemv_4bit_cuda_applies(at::randn({1, 96}), packed, w));  // x on the host
  EXPECT_FALSE(gemv_4bit_cuda_applies(at::randn({kGemvMaxRows + 1, 96}, kGpu), packed, w));
  EXPECT_FALSE(gemv_4bit_cuda_applies(at::randn({1, 96}, kGpu).to(at::kDouble), packed, w));
  auto q2 = quantize_4bit(at::randn({8, 100}), QuantType::kNF4, 32, false);  // 100 % 32 != 0
  EXPECT_FALSE(gemv_4bit_cuda_applies(at::randn({1, 100}, kGpu), q2.packed.to(kGpu), Weight4bit(q2.state, at::kFloat)));
}

// The layer on the GPU against the same layer on the host (decode rows through the GEMV,
// more rows through dequantize + cuBLAS, and backward to the input and bias). cuBLAS and
// the host GEMM sum in different orders: 1e-5 relative in fp32. bf16 compute: both round
// the same bf16 inputs, products summed in fp32 in different orders, 2e-2 relative.
TEST_F(Cuda4bit, LayerForwardAndBackwardEqualTheHostLayer) {
  at::manual_seed(2);
  for (auto [compute, tol] : {std::tuple{at::kFloat, 1e-5}, std::tuple{at::kBFloat16, 2e-2}}) {
    auto q = quantize_4bit(at::randn({96, 256}), QuantType::kNF4, 64, true);
    const auto w = std::make_shared<const Weight4bit>(q.state, compute);
    const at::Tensor bias = at::randn({96});
    for (int64_t rows : {1, 5, 40}) {
      const at::Tensor x = at::randn({2, rows, 256});
      {
        const c10::NoGradGuard no_grad;
        EXPECT_LE(rel(linear_4bit(x.to(kGpu), q.packed.to(kGpu), w, bias.to(kGpu)), linear_4bit(x, q.packed, w, bias)),
                  tol)
            << rows;
      }
      auto xh = x.clone().requires_grad_(true), xg = x.to(kGpu).requires_grad_(true);
      auto bh = bias.clone().requires_grad_(true), bg = bias.to(kGpu).requires_grad_(true);
      const at::Tensor g = at::randn({2, rows, 96});
      linear_4bit(xh, q.packed, w, bh).backward(g);
      const at::Tensor yg = linear_4bit(xg, q.packed.to(kGpu), w, bg);
      EXPECT_EQ(yg.device(), xg.device());
      yg.backward(g.to(kGpu));
      EXPECT_LE(rel(xg.grad(), xh.grad()), tol) << rows;
      EXPECT_LE(rel(bg.grad(), bh.grad()), tol) << rows;
    }
  }
}

}  // namespace
}  // namespace peft::quant
