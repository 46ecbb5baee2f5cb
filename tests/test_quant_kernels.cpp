// The 4-bit compute paths against the plain composition they replace: the fused decode
// GEMV and the differentiable 4-bit linear, each checked against x @ dequantize(W)^T.
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>

#include "quant/dequantize_fast.h"
#include "quant/gemv_4bit.h"
#include "quant/linear_4bit.h"
#include "util/cpu_features.h"

namespace peft::quant {
namespace {

std::shared_ptr<const Weight4bit> make(const at::Tensor& w, QuantType t, int64_t bs, bool nested, at::Tensor* packed) {
  auto q = quantize_4bit(w, t, bs, nested);
  *packed = q.packed;
  return std::make_shared<const Weight4bit>(std::move(q.state), at::kFloat);
}

double rel(const at::Tensor& a, const at::Tensor& b) {
  return ((a.to(at::kDouble) - b.to(at::kDouble)).abs().max() / b.to(at::kDouble).abs().max()).item<double>();
}

TEST(Gemv4bit, EqualsDequantizeThenMultiplyForEveryRowCountAndEveryKernel) {
  at::manual_seed(0);
  for (auto [type, bs, nested] : {std::tuple{QuantType::kNF4, int64_t{64}, false},
                                  std::tuple{QuantType::kFP4, int64_t{128}, true},
                                  std::tuple{QuantType::kNF4, int64_t{32}, true}}) {
    at::Tensor packed;
    const auto w = make(at::randn({96, 256}), type, bs, nested, &packed);
    const at::Tensor dense = dequantize_weight(packed, *w, at::kFloat);
    for (int64_t rows = 1; rows <= kGemvMaxRows; ++rows) {
      const at::Tensor x = at::randn({rows, 256});
      ASSERT_TRUE(gemv_4bit_applies(x, packed, *w));
      const at::Tensor want = at::matmul(x.to(at::kDouble), dense.to(at::kDouble).t());
      // fp32 sums of 256 products against a float64 reference: 1e-5 relative is ~100 ulp.
      for (auto kernel : {GemvKernel::kBest, GemvKernel::kAvx2, GemvKernel::kPortable})
        EXPECT_LE(rel(gemv_4bit(x, packed, *w, kernel), want), 1e-5) << rows << " " << static_cast<int>(kernel);
    }
  }
}

TEST(Gemv4bit, DoesNotApplyWhereRowsCrossBlocksOrThereAreManyRows) {
  at::Tensor packed;
  const auto w = make(at::randn({8, 96}), QuantType::kNF4, 64, false, &packed);  // 96 % 64 != 0
  EXPECT_FALSE(gemv_4bit_applies(at::randn({1, 96}), packed, *w));
  const auto w2 = make(at::randn({8, 128}), QuantType::kNF4, 64, false, &packed);
  // Up to kGemvMaxRowsTiled where the tiled kernels run, else kGemvMaxRows, never more.
  const auto w3 = std::make_shared<const Weight4bit>(w2->state, at::kBFloat16);
  for (const auto* weight : {w2.get(), w3.get()}) {
    const int64_t most = gemv_4bit_max_rows(*weight);
    EXPECT_TRUE(most == kGemvMaxRows || most == kGemvMaxRowsTiled) << most;
    EXPECT_TRUE(gemv_4bit_applies(at::randn({most, 128}), packed, *weight));
    EXPECT_FALSE(gemv_4bit_applies(at::randn({most + 1, 128}), packed, *weight));
  }
  EXPECT_EQ(gemv_4bit_max_rows(*w2), __builtin_cpu_supports("avx512f") ? kGemvMaxRowsTiled : kGemvMaxRows);
}

TEST(Linear4bit, ForwardAndInputGradientMatchTheDequantizedComposition) {
  at::manual_seed(1);
  at::Tensor packed;
  const auto w = make(at::randn({48, 128}), QuantType::kNF4, 64, true, &packed);
  const at::Tensor dense = dequantize_weight(packed, *w, at::kFloat);
  const at::Tensor bias = at::randn({48});
  for (int64_t rows : {3, 40}) {  // the decode kernel, then dequantize + GEMM
    auto x1 = at::randn({rows, 128}).requires_grad_(true);
    auto x2 = x1.detach().clone().requires_grad_(true);
    {
      c10::NoGradGuard no_grad;
      EXPECT_LE(rel(linear_4bit(x1, packed, w, bias), at::linear(x1, dense, bias)), 1e-5) << rows;
    }
    auto y1 = linear_4bit(x1, packed, w, bias);
    auto y2 = at::linear(x2, dense, bias);
    EXPECT_LE(rel(y1, y2), 1e-6);
    const auto g = at::randn_like(y2);
    y1.backward(g);
    y2.backward(g);
    EXPECT_LE(rel(x1.grad(), x2.grad()), 1e-6);
  }
}

}  // namespace
}  // namespace peft::quant

namespace peft::quant {
namespace {

TEST(DequantizeFast, BitIdenticalToDequantize4bitInFp32AndBf16WithNaNsAndInfs) {
  at::manual_seed(2);
  at::Tensor w = at::randn({64, 256}) * 3;
  w.index_put_({5, 7}, std::numeric_limits<float>::quiet_NaN());
  w.index_put_({9, 100}, std::numeric_limits<float>::infinity());
  w.index_put_({12}, 0.0);
  for (auto type : {QuantType::kNF4, QuantType::kFP4})
    for (int64_t bs : {32, 64, 256})
      for (bool nested : {false, true}) {
        auto q = quantize_4bit(w, type, bs, nested);
        const at::Tensor scales = dequantize_absmax(q.state);
        for (auto dtype : {at::kFloat, at::kBFloat16}) {
          const at::Tensor want = dequantize_4bit(q.packed, q.state, dtype);
          for (auto body : {DequantBody::kBest, DequantBody::kAvx2, DequantBody::kPortable}) {
            at::Tensor got = at::empty({64, 256}, at::TensorOptions().dtype(dtype));
            dequantize_rows_fast(q.packed, q.state, scales, got, body);
            // Bitwise: compare the raw bytes (NaN != NaN as values).
            EXPECT_TRUE(at::equal(got.view(dtype == at::kFloat ? at::kInt : at::kShort),
                                  want.view(dtype == at::kFloat ? at::kInt : at::kShort)))
                << quant_type_name(type) << " bs " << bs << " nested " << nested << " " << dtype << " body "
                << static_cast<int>(body);
          }
        }
      }
}

}  // namespace
}  // namespace peft::quant

namespace peft::quant {
namespace {

// Large enough that forward runs over several row tiles and backward over several column
// tiles, the last of each partial.
TEST(Linear4bit, TiledProductsCoverEveryTileForwardAndBackward) {
  at::manual_seed(3);
  auto q = quantize_4bit(at::randn({4100, 1088}), QuantType::kNF4, 64, false);
  const auto w = std::make_shared<const Weight4bit>(q.state, at::kFloat);
  const at::Tensor dense = dequantize_weight(q.packed, *w, at::kFloat);
  auto x1 = at::randn({2, 20, 1088}).requires_grad_(true);
  auto x2 = x1.detach().clone().requires_grad_(true);
  auto y1 = linear_4bit(x1, q.packed, w, at::Tensor());
  auto y2 = at::linear(x2, dense);
  EXPECT_LE(rel(y1, y2), 1e-6);  // the same products, blocked differently by the GEMM
  const auto g = at::randn_like(y2);
  y1.backward(g);
  y2.backward(g);
  EXPECT_LE(rel(x1.grad(), x2.grad()), 1e-6);
}

// bf16 compute becomes fp32 on a CPU whose bf16 products are LibTorch's reference GEMM,
// fp16 on one without fast fp16 products; fp32 stays, and so does each half type where
// its products are fast.
TEST(Linear4bit, HalfTypesComputeInFp32WhereTheirProductsAreSlow) {
  EXPECT_EQ(host_compute_dtype(at::kBFloat16, /*bf16_wanted=*/false, /*fp16_fast=*/true), at::kFloat);
  EXPECT_EQ(host_compute_dtype(at::kBFloat16, true, false), at::kBFloat16);
  EXPECT_EQ(host_compute_dtype(at::kHalf, true, false), at::kFloat);
  EXPECT_EQ(host_compute_dtype(at::kHalf, false, true), at::kHalf);
  EXPECT_EQ(host_compute_dtype(at::kFloat, false, false), at::kFloat);
}

TEST(DequantizeFast, TilesEqualTheSameSliceOfTheWholeWeightAlignedOrNot) {
  auto q = quantize_4bit(at::randn({40, 320}), QuantType::kFP4, 64, true);
  const at::Tensor scales = dequantize_absmax(q.state);
  const at::Tensor whole = dequantize_4bit(q.packed, q.state, at::kFloat);
  const at::Tensor whole_bf16 = dequantize_4bit(q.packed, q.state, at::kBFloat16);
  for (auto [r0, r1, c0, c1] : {std::tuple{3, 17, 64, 256}, std::tuple{0, 40, 0, 320}, std::tuple{5, 6, 10, 99}})
    for (auto body : {DequantBody::kBest, DequantBody::kAvx2, DequantBody::kPortable}) {
      at::Tensor tile = at::empty({r1 - r0, c1 - c0});
      dequantize_tile(q.packed, q.state, scales, r0, r1, c0, c1, tile, body);
      EXPECT_TRUE(at::equal(tile, whole.slice(0, r0, r1).slice(1, c0, c1)))
          << r0 << " " << c0 << " " << c1 << " body " << static_cast<int>(body);
      at::Tensor tile_bf16 = at::empty({r1 - r0, c1 - c0}, at::kBFloat16);
      dequantize_tile(q.packed, q.state, scales, r0, r1, c0, c1, tile_bf16, body);
      EXPECT_TRUE(at::equal(tile_bf16, whole_bf16.slice(0, r0, r1).slice(1, c0, c1)))
          << r0 << " " << c0 << " " << c1 << " bf16 body " << static_cast<int>(body);
    }
}

}  // namespace
}  // namespace peft::quant

#include "util/autocast.h"

namespace peft::quant {
namespace {

// bf16 training runs the 4-bit products in bf16 even for an fp32 compute dtype, as bnb's
// F.linear under autocast does; the output stays bf16, as a dense bf16 Linear's does under
// autocast, so the activations after it are saved at bf16 width as in the dense model.
TEST(Linear4bit, UnderAutocastComputesInBf16AndReturnsAutocastsDtype) {
  at::manual_seed(4);
  auto q = quantize_4bit(at::randn({64, 256}), QuantType::kNF4, 64, false);
  const auto w = std::make_shared<const Weight4bit>(q.state, at::kFloat);
  const at::Tensor x = at::randn({40, 256});
  const at::Tensor want = at::linear(x.to(at::kBFloat16), dequantize_weight(q.packed, *w, at::kBFloat16));
  at::Tensor got;
  {
    AutocastGuard autocast(at::kCPU, true, at::kBFloat16);
    got = linear_4bit(x, q.packed, w, at::Tensor());
  }
  EXPECT_EQ(got.scalar_type(), at::kBFloat16);
  {
    AutocastGuard autocast(at::kCPU, true, at::kBFloat16);  // what the dense layer returns
    EXPECT_EQ(at::linear(x, dequantize_weight(q.packed, *w, at::kBFloat16)).scalar_type(), got.scalar_type());
  }
  // The same bf16 products; only the GEMM's blocking differs (one bf16 rounding apart).
  EXPECT_LE(rel(got, want.to(at::kFloat)), 1e-2);
  EXPECT_GT(rel(got, at::linear(x, dequantize_weight(q.packed, *w, at::kFloat))), 1e-4);  // not fp32
}

}  // namespace
}  // namespace peft::quant

namespace peft::quant {
namespace {

// bf16 compute: on CPUs with AVX512-BF16 the GEMV multiplies bf16 x by bf16 weights; the
// error is then that of rounding both to bf16 (2^-9 relative each), summed over 512 terms
// of random sign: 1e-2 of the largest output bounds it with room.
TEST(Gemv4bit, Bf16ComputeStaysWithinBf16RoundingOfTheExactProduct) {
  at::manual_seed(5);
  for (int64_t bs : {64, 128}) {
    auto q = quantize_4bit(at::randn({80, 512}), QuantType::kNF4, bs, true);
    const auto w = std::make_shared<const Weight4bit>(q.state, at::kBFloat16);
    const at::Tensor dense = dequantize_weight(q.packed, *w, at::kFloat).to(at::kDouble);
    for (int64_t rows : {1, 3, 8, 13, 16, 64}) {  // up to kGemvMaxRowsTiled
      const at::Tensor x = at::randn({rows, 512});
      const at::Tensor want = at::matmul(x.to(at::kDouble), dense.t());
      EXPECT_LE(rel(gemv_4bit(x, q.packed, *w), want), 1e-2) << bs << " " << rows;
      EXPECT_LE(rel(gemv_4bit(x, q.packed, *w, GemvKernel::kPortable), want), 1e-5) << bs << " " << rows;
      EXPECT_LE(rel(gemv_4bit(x, q.packed, *w, GemvKernel::kAvx2), want), 1e-5) << bs << " " << rows;
    }
  }
}

// fp32 compute from 2 rows on (AVX-512 tiles of 4 or 1 features x 4, 2, 1 rows; 83 = 4 *
// 20 + 3; other CPUs' bodies likewise): against x times the fp32 dequantized weight in
// float64, only the summation order differs (1e-5 relative, ~100 fp32 ulp), and each row
// gets the bits it gets in a pair.
TEST(Gemv4bit, Fp32RowsInAnyGroupingGiveTheDequantizedProduct) {
  at::manual_seed(8);
  for (int64_t bs : {32, 128}) {
    auto q = quantize_4bit(at::randn({83, 512}), QuantType::kNF4, bs, true);
    const auto w = std::make_shared<const Weight4bit>(q.state, at::kFloat);
    const at::Tensor x = at::randn({kGemvMaxRowsTiled, 512});
    const at::Tensor want =
        at::matmul(x.to(at::kDouble), dequantize_weight(q.packed, *w, at::kFloat).to(at::kDouble).t());
    for (int64_t rows : {int64_t{2}, int64_t{3}, int64_t{5}, int64_t{7}, int64_t{17}, gemv_4bit_max_rows(*w)}) {
      const at::Tensor got = gemv_4bit(x.narrow(0, 0, rows), q.packed, *w);
      EXPECT_LE(rel(got, want.narrow(0, 0, rows)), 1e-5) << bs << " " << rows;
      for (int64_t r = 0; r + 1 < rows; r += 3)
        EXPECT_TRUE(at::equal(got.narrow(0, r, 2), gemv_4bit(x.narrow(0, r, 2), q.packed, *w))) << bs << " " << r;
    }
  }
}

// From 2 rows on, the bf16 kernel's weights are bnb's bf16 dequantization itself
// (dequantize_weight is byte-identical to bnb's): against bf16 x times that weight in
// float64, only the fp32 summation order differs, 1e-5 relative is ~100 fp32 ulp. Every
// row grouping (tiles of 4, 2, 1 rows; 4 or 1 features, 83 = 4 * 20 + 3) gives each row
// the same bits as computing it alone in a pair. A CPU without AVX512-BF16 computes in
// fp32 instead, so there the fp32 dequantized weight is the reference.
TEST(Gemv4bit, Bf16KernelFromTwoRowsMultipliesBnbsBf16Weights) {
  const bool bf16_kernel = cpu_has_avx512_bf16();
  at::manual_seed(6);
  for (int64_t bs : {64, 256}) {
    auto q = quantize_4bit(at::randn({83, 512}), QuantType::kNF4, bs, true);
    const auto w = std::make_shared<const Weight4bit>(q.state, at::kBFloat16);
    const at::Tensor x = at::randn({kGemvMaxRowsTiled, 512});
    const at::Tensor want =
        bf16_kernel ? at::matmul(x.to(at::kBFloat16).to(at::kDouble),
                                 dequantize_weight(q.packed, *w, at::kBFloat16).to(at::kDouble).t())
                    : at::matmul(x.to(at::kDouble), dequantize_weight(q.packed, *w, at::kFloat).to(at::kDouble).t());
    for (int64_t rows : {int64_t{2}, int64_t{3}, int64_t{5}, int64_t{7}, int64_t{17}, gemv_4bit_max_rows(*w)}) {
      const at::Tensor got = gemv_4bit(x.narrow(0, 0, rows), q.packed, *w);
      EXPECT_LE(rel(got, want.narrow(0, 0, rows)), 1e-5) << bs << " " << rows;
      for (int64_t r = 0; r + 1 < rows; r += 3)
        EXPECT_TRUE(at::equal(got.narrow(0, r, 2), gemv_4bit(x.narrow(0, r, 2), q.packed, *w))) << bs << " " << r;
    }
    // One row scales bf16 codes in fp32 instead: within the weight's bf16 rounding.
    EXPECT_LE(rel(gemv_4bit(x.narrow(0, 0, 1), q.packed, *w), want.narrow(0, 0, 1)), 1e-2) << bs;
  }
}

}  // namespace
}  // namespace peft::quant

#include <ATen/Parallel.h>

namespace peft::quant {
namespace {

// The kernels split their work over ATen's intra-op threads (CI runs the suite on one):
// two threads give the same bits as one, for every chunked kernel.
TEST(QuantKernels, TwoThreadsGiveTheBitsOfOne) {
  const int threads = at::get_num_threads();
  at::manual_seed(7);
  const at::Tensor full = at::randn({384, 1024}).to(at::kBFloat16);  // 6144 blocks: several chunks each
  const at::Tensor x = at::randn({16, 1024});
  auto run = [&](int n) {
    at::set_num_threads(n);
    auto q = quantize_4bit(full, QuantType::kNF4, 64, /*nested=*/true);
    std::vector<at::Tensor> out = {q.packed, q.state.absmax, q.state.nested_absmax,
                                   dequantize_4bit(q.packed, q.state, at::kFloat)};
    for (auto compute : {at::kFloat, at::kBFloat16}) {
      const Weight4bit w(q.state, compute);
      out.push_back(dequantize_weight(q.packed, w, compute));
      out.push_back(gemv_4bit(x.narrow(0, 0, compute == at::kFloat ? kGemvMaxRows : 15), q.packed, w));
      out.push_back(gemv_4bit(x.narrow(0, 0, kGemvMaxRows), q.packed, w, GemvKernel::kAvx2));
    }
    return out;
  };
  const auto one = run(1), two = run(2);
  at::set_num_threads(threads);
  ASSERT_EQ(one.size(), two.size());
  for (size_t i = 0; i < one.size(); ++i) EXPECT_TRUE(at::equal(one[i], two[i])) << "output " << i;
}

}  // namespace
}  // namespace peft::quant
