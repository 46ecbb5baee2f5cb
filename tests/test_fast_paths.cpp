// The training fast paths, each against the plain ATen composition it replaces: the
// chunked/fused causal LM loss, bf16 storage of the frozen base, and gradient
// checkpointing under autocast; and the CUDA backend loaded on demand.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <c10/core/InferenceMode.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "models/decode_attention.h"
#include "models/few_row_bf16.h"
#include "models/few_row_linear.h"
#include "models/fused_kernels.h"
#include "models/fused_ops.h"
#include "peft/layers.h"
#include "peft/peft_model.h"
#include "peft/train.h"
#include "peft/tuner.h"
#include "train/lm_loss.h"
#include "tuners/lora/few_rows.h"
#include "train/precision.h"
#include "util/allocator.h"
#include "util/autocast.h"
#include "util/cuda_backend.h"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace peft {
namespace {

fs::path parity(const std::string& name) { return fs::path(PEFT_PARITY_DIR) / name; }

// transformers' causal LM loss: logits of every position, shifted, summed cross-entropy.
at::Tensor reference_loss(const at::Tensor& logits, const at::Tensor& labels) {
  const int64_t v = logits.size(-1), s = logits.size(1);
  return at::cross_entropy_loss(logits.narrow(1, 0, s - 1).reshape({-1, v}).to(at::kFloat),
                                labels.narrow(1, 1, s - 1).reshape({-1}), {}, at::Reduction::Sum, -100);
}

struct LossCase {
  at::Tensor hidden, labels;
};

LossCase loss_case(int64_t vocab) {
  at::manual_seed(3);
  LossCase c{at::randn({3, 11, 16}), at::randint(vocab, {3, 11})};
  c.labels.index_put_({0, at::indexing::Slice(0, 5)}, -100);  // a masked prompt
  c.labels.index_put_({2, at::indexing::Slice(7, at::indexing::None)}, -100);  // padding
  return c;
}

double rel(const at::Tensor& a, const at::Tensor& b) {
  return ((a.to(at::kDouble) - b.to(at::kDouble)).abs().max() / b.to(at::kDouble).abs().max()).item<double>();
}

// Value and gradient wrt the hidden states, ours (chunks of 4 rows) against the reference.
void expect_loss_matches(Linear& head, double tol, bool bf16) {
  auto c = loss_case(head.out_features);
  auto h1 = c.hidden.clone().requires_grad_(true), h2 = c.hidden.clone().requires_grad_(true);
  at::Tensor ours, want;
  {
    AutocastGuard autocast(at::kCPU, bf16, at::kBFloat16);
    ours = causal_lm_loss_sum(head, h1, c.labels, 4);
    want = reference_loss(head.forward(h2), c.labels);
  }
  EXPECT_LE(std::abs(ours.item<double>() - want.item<double>()), tol * std::abs(want.item<double>()));
  ours.backward();
  want.backward();
  EXPECT_LE(rel(h1.grad(), h2.grad()), tol);
  // Positions whose next label is ignored get no gradient at all.
  EXPECT_EQ(h1.grad()[0].narrow(0, 0, 4).abs().max().item<double>(), 0.0);
}

// The flush-to-zero mode is per thread: flush_denormals must reach every thread of ATen's
// intra-op pool, not only the caller (a denormal on one thread slows only its chunks).
TEST(FlushDenormals, EveryIntraOpThreadFlushes) {
  const int threads = at::get_num_threads();
  at::set_num_threads(2);
  const at::Tensor tiny = at::full({1 << 20}, 1e-40f);  // a denormal; ATen splits the product
  ASSERT_EQ(at::count_nonzero(tiny * 1.0f).item<int64_t>(), tiny.numel()) << "denormals flushed already";
  EXPECT_TRUE(flush_denormals());
  EXPECT_EQ(at::count_nonzero(tiny * 1.0f).item<int64_t>(), 0);
  at::set_num_threads(threads);
}

// Decoding's few-row products split over the intra-op threads: the values of the whole
// product (the same MKL calls on runs of 64 features; on the measured hosts the same bits,
// asserted here within 1e-6 so another BLAS blocking cannot fail it), for a Linear [out,
// in] and a Conv1D [in, out] weight, with and without bias, a partial last run included.
TEST(FewRowLinear, MatchesTheWholeProductAndStepsAsideWhereItDoesNotApply) {
  const int threads = at::get_num_threads();
  at::set_num_threads(2);
  c10::NoGradGuard no_grad;
  at::manual_seed(3);
  const at::Tensor w = at::randn({1000, 384}), b = at::randn({1000});
  const at::Tensor w_in_out = w.t().contiguous();
  for (int64_t rows : {int64_t{1}, int64_t{3}, kFewRows}) {
    const at::Tensor x = at::randn({rows, 1, 384});
    for (const at::Tensor& bias : {b, at::Tensor()}) {
      const at::Tensor want = at::linear(x, w, bias);
      const at::Tensor got = few_row_linear(x, w, bias), got_t = few_row_linear(x, w_in_out, bias, true);
      ASSERT_TRUE(got.defined() && got_t.defined()) << rows;
      ASSERT_EQ(got.sizes(), want.sizes());
      EXPECT_LE(rel(got, want), 1e-6) << rows;
      EXPECT_LE(rel(got_t.view(want.sizes()), want), 1e-6) << rows;
    }
  }
  {
    // Under InferenceMode (as generation runs) the workers write the caller's inference tensor.
    c10::InferenceMode inference;
    const at::Tensor x = at::randn({2, 384});
    EXPECT_LE(rel(few_row_linear(x, w, b), at::linear(x, w, b)), 1e-6);
  }
  EXPECT_FALSE(few_row_linear(at::randn({kFewRows + 1, 384}), w, b).defined());
  EXPECT_FALSE(few_row_linear(at::randn({1, 384}).to(at::kHalf), w.to(at::kHalf), {}).defined());
  {
    c10::AutoGradMode grad(true);
    EXPECT_FALSE(few_row_linear(at::randn({1, 384}).requires_grad_(true), w, b).defined());
  }
  at::set_num_threads(1);
  EXPECT_FALSE(few_row_linear(at::randn({1, 384}), w, b).defined());
  at::set_num_threads(threads);
}

// bf16 few-row products (AVX512-BF16 kernel): rows in groups of 4, 2 and 1, features in
// blocks of 16 and a remainder, a row length that is not a multiple of 32, with and without
// bias, against float64 rounded once to bf16: within one bf16 step of the exact value
// (2^-7 relative) plus the fp32 sum's rounding (1e-5 of sum |x w|). Where the CPU lacks
// the instructions (or has AMX) the product is left to ATen: undefined.
TEST(FewRowLinear, Bf16RowsMatchTheExactProductRoundedOnce) {
  c10::NoGradGuard no_grad;
  at::manual_seed(11);
  for (const auto [out, in] : {std::pair<int64_t, int64_t>{1000, 200}, {48, 960}, {7, 64}}) {
    const at::Tensor w = at::randn({out, in}).to(at::kBFloat16), b = at::randn({out}).to(at::kBFloat16);
    for (int64_t rows : {1, 2, 3, 5, 8, 16}) {
      const at::Tensor x = at::randn({rows, 1, in}).to(at::kBFloat16);
      for (const at::Tensor& bias : {b, at::Tensor()}) {
        const at::Tensor got = few_row_linear(x, w, bias);
        if (!few_row_bf16_supported()) {
          EXPECT_FALSE(got.defined());
          continue;
        }
        ASSERT_TRUE(got.defined()) << rows;
        ASSERT_EQ(got.scalar_type(), at::kBFloat16);
        ASSERT_EQ(got.sizes(), (std::vector<int64_t>{rows, 1, out}));
        at::Tensor exact = at::matmul(x.to(at::kDouble), w.to(at::kDouble).t());
        if (bias.defined()) exact = exact + bias.to(at::kDouble);
        const at::Tensor scale = at::matmul(x.to(at::kDouble).abs(), w.to(at::kDouble).abs().t());
        const at::Tensor err = (got.to(at::kDouble) - exact).abs();
        EXPECT_TRUE((err <= exact.abs() * (1.0 / 128) + scale * 1e-5).all().item<bool>())
            << out << " x " << in << ", " << rows << " rows: max error " << err.max().item<double>();
      }
    }
  }
  const at::Tensor w = at::randn({64, 96}).to(at::kBFloat16);
  EXPECT_FALSE(few_row_linear(at::randn({kFewRowsBf16 + 1, 96}).to(at::kBFloat16), w, {}).defined());
  EXPECT_FALSE(few_row_linear(at::randn({1, 64}).to(at::kBFloat16), w, {}, /*weight_in_out=*/true).defined());
  {
    c10::AutoGradMode grad(true);
    EXPECT_FALSE(few_row_linear(at::randn({1, 96}).to(at::kBFloat16).requires_grad_(true), w, {}).defined());
  }
}

// An unmerged LoRA's term at decode (a few rows, no gradient) in one pass, against the
// float64 composition rounded once as HF PEFT rounds `result + lora * scaling`: fp32 within
// 1e-5 of |out| + |lora|, bf16 within one bf16 step. Ranks of 8, 16, 5 and 40 (under,
// at and over one vector), widths that are and are not multiples of 16 and 32, with and
// without lora_B's bias, 1 to kLoraFewRows rows; it steps aside for more rows, a
// gradient, autocast or fp32 outputs of a bf16 input.
TEST(LoraFewRows, MatchesTheCompositionRoundedOnceAndStepsAside) {
  c10::NoGradGuard no_grad;
  at::manual_seed(12);
  for (const auto [in, rank, features] : {std::tuple<int64_t, int64_t, int64_t>{960, 16, 320}, {100, 5, 33},
                                          {64, 8, 16}, {200, 40, 50}}) {
    const at::Tensor a = at::randn({rank, in}) * 0.05, b = at::randn({features, rank}) * 0.05;
    const at::Tensor bias = at::randn({features});
    for (const auto dt : {at::kFloat, at::kBFloat16})
      for (const int64_t rows : {int64_t{1}, int64_t{3}, int64_t{8}, kLoraFewRows})
        for (const bool with_bias : {false, true}) {
          const at::Tensor x = at::randn({rows, 1, in}).to(dt), out = at::randn({rows, 1, features}).to(dt);
          const at::Tensor bb = with_bias ? bias : at::Tensor();
          at::Tensor lora = at::matmul(at::matmul(x.to(at::kDouble), a.to(at::kDouble).t()), b.to(at::kDouble).t());
          if (with_bias) lora = lora + bias.to(at::kDouble);
          const at::Tensor exact = out.to(at::kDouble) + lora * 2.0;
          for (const auto body : {LoraFewRowsBody::kBest, LoraFewRowsBody::kAvx2, LoraFewRowsBody::kPortable}) {
            const at::Tensor got = lora_few_rows(x, a, b, bb, 2.0, out, body);
            ASSERT_TRUE(got.defined()) << rows;
            ASSERT_EQ(got.sizes(), out.sizes());
            ASSERT_EQ(got.scalar_type(), dt);
            const std::string what = std::to_string(in) + " " + c10::toString(dt) + " rows " + std::to_string(rows) +
                                     " body " + std::to_string(static_cast<int>(body));
            if (dt == at::kFloat) {
              const at::Tensor bound = (out.to(at::kDouble).abs() + lora.abs() * 2.0) * 1e-5 + 1e-6;
              EXPECT_TRUE(((got.to(at::kDouble) - exact).abs() <= bound).all().item<bool>()) << what;
            } else {
              const at::Tensor err = (got.to(at::kDouble) - exact).abs();
              EXPECT_TRUE((err <= exact.abs() / 128 + 1e-5).all().item<bool>()) << what << " " << err.max().item<double>();
            }
          }
        }
    const at::Tensor x = at::randn({1, in}), out = at::randn({1, features});
    EXPECT_FALSE(lora_few_rows(at::randn({kLoraFewRows + 1, in}), a, b, {}, 2.0,
                               at::randn({kLoraFewRows + 1, features})).defined());
    EXPECT_FALSE(lora_few_rows(x.to(at::kBFloat16), a, b, {}, 2.0, out).defined());  // mixed dtypes
    {
      c10::AutoGradMode grad(true);
      EXPECT_FALSE(lora_few_rows(x, a.clone().requires_grad_(true), b, {}, 2.0, out).defined());
    }
    {
      AutocastGuard autocast(at::kCPU, true, at::kBFloat16);
      EXPECT_FALSE(lora_few_rows(x, a, b, {}, 2.0, out).defined());
    }
  }
}

// The tensor block cache: a freed large block comes back for the next request of its
// size class, aligned as c10's allocator; small blocks bypass it; values are intact.
TEST(TensorBlockCache, ReusesAFreedBlockOfTheSameClassAndKeepsAlignment) {
  install_tensor_block_cache();
  void* first = nullptr;
  {
    at::Tensor a = at::empty({1 << 18}, at::kFloat);  // 1 MiB
    first = a.data_ptr();
    EXPECT_EQ(reinterpret_cast<uintptr_t>(first) % 64, 0u);
  }
  const auto before = tensor_block_cache_stats();
  EXPECT_GE(before.cached_bytes, size_t{1} << 20);
  at::Tensor b = at::empty({(1 << 18) - 100}, at::kFloat);  // same class
  EXPECT_EQ(b.data_ptr(), first);
  EXPECT_EQ(tensor_block_cache_stats().hits, before.hits + 1);
  at::Tensor small = at::arange(1000, at::kFloat);
  EXPECT_EQ(tensor_block_cache_stats().hits, before.hits + 1);
  at::Tensor big = at::arange(1 << 20, at::kFloat);
  EXPECT_EQ(big[(1 << 20) - 1].item<float>(), static_cast<float>((1 << 20) - 1));
  EXPECT_EQ(small.sum().item<double>(), 999.0 * 1000 / 2);
}

TEST(FusedLoss, PlainHeadMatchesTheLogitsComposition) {
  Linear head(16, 37, false);
  head.weight = at::randn({37, 16});
  expect_loss_matches(head, 1e-6, false);
}

TEST(FusedLoss, Bf16AutocastMatchesTheLogitsComposition) {
  Linear head(16, 37, false);
  head.weight = at::randn({37, 16});
  expect_loss_matches(head, 2e-3, true);
  head.weight = head.weight.to(at::kBFloat16);  // stored in bf16, as precision=bf16 does
  expect_loss_matches(head, 2e-3, true);
}

TEST(FusedLoss, TrainedHeadTakesTheCheckpointedPathAndGetsItsGradient) {
  Linear a(16, 37, true), b(16, 37, true);
  auto w = at::randn({37, 16}), bias = at::randn({37});
  for (Linear* l : {&a, &b}) {
    l->weight = w.clone().requires_grad_(true);
    l->bias = bias.clone();
  }
  auto c = loss_case(37);
  auto h1 = c.hidden.clone().requires_grad_(true), h2 = c.hidden.clone().requires_grad_(true);
  auto ours = causal_lm_loss_sum(a, h1, c.labels, 4);
  auto want = reference_loss(b.forward(h2), c.labels);
  EXPECT_NEAR(ours.item<double>(), want.item<double>(), 1e-6 * want.item<double>());
  ours.backward();
  want.backward();
  EXPECT_LE(rel(h1.grad(), h2.grad()), 1e-6);
  EXPECT_LE(rel(a.weight.grad(), b.weight.grad()), 1e-6);
}

TEST(FusedLoss, NoLabelledTokenIsAZeroLossThatStillBackpropagates) {
  Linear head(16, 37, false);
  head.weight = at::randn({37, 16});
  auto h = at::randn({2, 5, 16}).requires_grad_(true);
  auto loss = causal_lm_loss_sum(head, h, at::full({2, 5}, -100, at::kLong));
  EXPECT_EQ(loss.item<double>(), 0.0);
  loss.backward();
  EXPECT_EQ(h.grad().abs().max().item<double>(), 0.0);
}

std::unique_ptr<AdapterConfig> lora(const char* j) { return parse_adapter_config(json::parse(j), "test"); }

TEST(FrozenBf16, MatmulAndEmbeddingWeightsOnlyAndNeverATrainedOrDoraWeight) {
  auto model = load_model(parity("llama_mha").string());
  PeftModel peft(model);
  peft.add_adapter("default", *lora(R"({"peft_type": "LORA", "r": 2, "target_modules": ["q_proj", "v_proj"]})"));
  EXPECT_GT(store_frozen_weights(*model, at::kBFloat16), 0);
  for (const auto& [name, t] : model->named_parameters()) {
    const bool low = name.find("_proj.weight") != std::string::npos || name == "lm_head.weight" ||
                     name == "model.embed_tokens.weight";
    if (low) EXPECT_EQ(t.scalar_type(), at::kBFloat16) << name;
    else EXPECT_EQ(t.scalar_type(), at::kFloat) << name;  // norms, LoRA A/B
  }
  // DoRA reads its host's weight: that host stays fp32.
  auto m2 = load_model(parity("llama_mha").string());
  PeftModel p2(m2);
  p2.add_adapter("default", *lora(R"({"peft_type": "LORA", "r": 2, "use_dora": true, "target_modules": ["q_proj"]})"));
  store_frozen_weights(*m2, at::kBFloat16);
  for (const auto& [name, t] : m2->named_parameters())
    if (name.find("q_proj.weight") != std::string::npos) EXPECT_EQ(t.scalar_type(), at::kFloat) << name;
}

TEST(FrozenBf16, TiedHeadAndEmbeddingShareOneTableWhoseLookupsComeBackFp32) {
  auto model = load_model(parity("gpt2").string());  // tied lm_head
  auto* emb = model->input_embeddings();
  auto* head = model->output_layer();
  ASSERT_TRUE(emb && head);
  ASSERT_TRUE(emb->weight.is_same(*head->weight_tensor()));
  const auto before = emb->weight.clone();
  const auto ids = at::arange(0, 7, at::kLong).view({1, 7});
  store_frozen_weights(*model, at::kBFloat16);
  EXPECT_EQ(emb->weight.scalar_type(), at::kBFloat16);
  EXPECT_TRUE(emb->weight.is_same(*head->weight_tensor()));
  EXPECT_TRUE(at::equal(emb->weight, before.to(at::kBFloat16)));
  const auto looked_up = emb->forward(ids);
  EXPECT_EQ(looked_up.scalar_type(), at::kFloat);
  EXPECT_TRUE(at::equal(looked_up, at::embedding(before, ids).to(at::kBFloat16).to(at::kFloat)));
}

TEST(FrozenBf16, AnEmbeddingWithAnAdapterOrThatTrainsStaysFp32) {
  auto model = load_model(parity("llama_mha").string());
  PeftModel peft(model);
  peft.add_adapter("default", *lora(R"({"peft_type": "LORA", "r": 2, "target_modules": ["embed_tokens"]})"));
  store_frozen_weights(*model, at::kBFloat16);
  EXPECT_EQ(model->input_embeddings()->weight.scalar_type(), at::kFloat);
  auto m2 = load_model(parity("llama_mha").string());
  m2->input_embeddings()->weight.requires_grad_(true);
  store_frozen_weights(*m2, at::kBFloat16);
  EXPECT_EQ(m2->input_embeddings()->weight.scalar_type(), at::kFloat);
}

// precision=bf16 on a GPU builds on the host and then moves everything (train/setup.cpp).
// The meta device shows where each tensor went without a GPU.
TEST(FrozenBf16, PeftModelToMovesEveryTensorAndKeepsTiesAndTrainability) {
  auto model = load_model(parity("llama_gqa_tied").string());
  PeftModel peft(model);
  peft.add_adapter("default", *lora(R"({"peft_type": "LORA", "r": 2, "target_modules": ["q_proj"],
                                        "modules_to_save": ["norm"]})"));
  peft.add_adapter("prompt", *lora(R"({"peft_type": "PROMPT_TUNING", "task_type": "CAUSAL_LM",
                                       "num_virtual_tokens": 3})"));
  peft.set_adapter({"default"});
  store_frozen_weights(*model, at::kBFloat16);
  std::map<std::string, std::pair<bool, at::ScalarType>> before;
  for (const auto& [n, t] : model->named_parameters()) before[n] = {t.requires_grad(), t.scalar_type()};
  const auto counts = peft.trainable_parameters();
  peft.to(at::Device(at::kMeta));
  for (const auto& [n, t] : model->named_parameters()) {
    EXPECT_TRUE(t.is_meta()) << n;
    EXPECT_EQ(t.requires_grad(), before.at(n).first) << n;
    EXPECT_EQ(t.scalar_type(), before.at(n).second) << n;
  }
  EXPECT_TRUE(model->input_embeddings()->weight.is_same(*model->output_layer()->weight_tensor()));
  EXPECT_EQ(peft.trainable_parameters(), counts);
  for (const auto& t : peft.trainable_tensors()) {
    EXPECT_TRUE(t.is_meta());
    EXPECT_TRUE(t.is_leaf() && t.requires_grad());  // what the optimizer needs
  }
  peft.set_adapter({"prompt"});  // swaps the original norm back in, and the input adapter
  for (const auto& [n, t] : model->named_parameters()) EXPECT_TRUE(t.is_meta()) << n;
  for (const auto& t : peft.trainable_tensors()) EXPECT_TRUE(t.is_meta());
  EXPECT_FALSE(peft.trainable_tensors().empty());
}

// --- fused bf16 ops (models/fused_ops.h) against the ATen compositions they replace ---

// Runs `body` once with the AVX-512 kernels (where the CPU has them) and once with the
// portable scalar ones.
template <class F>
void for_each_kernel(F body) {
  for (bool scalar : {false, true}) {
    fused_kernels::force_scalar_kernels(scalar);
    SCOPED_TRACE(fused_kernels::kernel_isa());
    body();
  }
  fused_kernels::force_scalar_kernels(false);
}

// Largest difference in steps of bf16 at the reference's values (a bf16 step at w is
// 2^(floor(log2 |w|) - 7)); zeros compare against the smallest normal step.
double bf16_steps(const at::Tensor& got, const at::Tensor& want) {
  auto w = want.to(at::kDouble);
  auto step = at::exp2(at::floor(at::log2(w.abs().clamp_min(1e-30))) - 7);
  return ((got.to(at::kDouble) - w).abs() / step).max().item<double>();
}

TEST(FusedOps, RmsNormBf16MatchesTheCompositionCastToBf16AndItsGradient) {
  for_each_kernel([] {
    for (int64_t n : {40, 768}) {      // a width with a 16-lane tail, and a model's
      for (auto wdtype : {at::kFloat, at::kBFloat16}) {
        at::manual_seed(n);
        auto x = (at::randn({3, 7, n}) * 3).requires_grad_(true);
        auto w = (1 + 0.1 * at::randn({n})).to(wdtype);
        auto x_ref = x.detach().clone().requires_grad_(true);
        auto got = fused::rms_norm_bf16(x, w, 1e-6);
        auto want = fused::rms_norm_aten(x_ref, w, 1e-6).to(at::kBFloat16);
        ASSERT_EQ(got.scalar_type(), at::kBFloat16);
        // The row sums round differently: at most one bf16 step apart, mostly identical.
        EXPECT_LE(bf16_steps(got, want), 1.0) << n;
        EXPECT_GE(got.eq(want).to(at::kFloat).mean().item<double>(), 0.97) << n;
        auto g = at::randn({3, 7, n}).to(at::kBFloat16);
        got.backward(g);
        want.backward(g);
        EXPECT_LE(rel(x.grad(), x_ref.grad()), 1e-5) << n;
      }
    }
  });
}

TEST(FusedOps, RopeBf16MatchesTheCompositionCastToBf16AndItsGradient) {
  for_each_kernel([] {
    for (int64_t d : {40, 64}) {
      for (int64_t cos_batch : {1, 2}) {
        at::manual_seed(d + cos_batch);
        const int64_t b = 2, s = 5, heads = 3;
        // As the models make it: a linear's [b, s, heads * d] output split into heads.
        auto q = at::randn({b, s, heads * d}).to(at::kBFloat16).requires_grad_(true);
        auto q_ref = q.detach().clone();
        auto angle = at::randn({cos_batch, 1, s, d / 2}).repeat({1, 1, 1, 2}) * 4;
        auto cos = angle.cos(), sin = angle.sin();
        auto split = [&](const at::Tensor& t) { return t.view({b, s, heads, d}).transpose(1, 2); };
        auto got = fused::rope_bf16(split(q), cos, sin);
        auto want = fused::rope_aten(split(q_ref), cos, sin).to(at::kBFloat16);
        ASSERT_EQ(got.sizes(), want.sizes());
        EXPECT_TRUE(at::equal(got, want)) << "d " << d;  // same products and sum, one rounding
        // Backward against the fp32 composition (ATen's bf16 one rounds each branch before
        // adding them, which can cancel to 0): ours is that gradient rounded once.
        auto q32 = q.detach().to(at::kFloat).requires_grad_(true);
        auto g = at::randn(got.sizes()).to(at::kBFloat16);
        got.backward(g);
        fused::rope_aten(split(q32), cos, sin).backward(g.to(at::kFloat));
        EXPECT_LE(bf16_steps(q.grad(), q32.grad()), 0.501) << "d " << d;
      }
    }
  });
}

TEST(FusedOps, SiluMulBf16MatchesTheCompositionAndItsGradients) {
  for_each_kernel([] {
    at::manual_seed(5);
    auto g = (at::randn({3, 37}) * 4).to(at::kBFloat16);
    g.index_put_({0, 0}, -200.0);  // saturated both ways: silu -> 0 and -> g
    g.index_put_({0, 1}, 200.0);
    auto u = at::randn({3, 37}).to(at::kBFloat16);
    auto g1 = g.clone().requires_grad_(true), u1 = u.clone().requires_grad_(true);
    auto g2 = g.to(at::kFloat).requires_grad_(true), u2 = u.to(at::kFloat).requires_grad_(true);
    auto got = fused::silu_mul_bf16(g1, u1);
    auto want = fused::silu_mul_aten(g2, u2);  // in fp32: the fused op rounds once, at the end
    ASSERT_EQ(got.scalar_type(), at::kBFloat16);
    EXPECT_LE(bf16_steps(got, want), 0.501);
    auto dy = at::randn({3, 37}).to(at::kBFloat16);
    got.backward(dy);
    want.backward(dy.to(at::kFloat));
    EXPECT_LE(bf16_steps(g1.grad(), g2.grad()), 0.501);
    EXPECT_LE(bf16_steps(u1.grad(), u2.grad()), 0.501);
  });
}

TEST(FusedOps, CrossEntropyBf16RowsMatchLogSoftmaxAndSoftmaxMinusOnehot) {
  for_each_kernel([] {
    at::manual_seed(9);
    const int64_t rows = 5, vocab = 1003;  // a vocabulary with a 16-lane tail
    auto logits = (at::randn({rows, vocab}) * 6).to(at::kBFloat16);
    auto targets = at::randint(vocab, {rows});
    targets.index_put_({0}, vocab - 1);  // the last column, in the tail
    auto x = logits.to(at::kFloat);
    auto want_loss = -at::log_softmax(x, 1).gather(1, targets.unsqueeze(1)).squeeze(1);
    auto want_grad = at::softmax(x, 1) - at::one_hot(targets, vocab).to(at::kFloat);
    auto buf = logits.clone();
    auto loss = fused::cross_entropy_bf16_(buf, targets, /*want_grad=*/true);
    EXPECT_LE(rel(loss, want_loss), 1e-5);
    EXPECT_LE(bf16_steps(buf, want_grad), 0.501);  // computed in fp32, rounded once
    auto again = logits.clone();
    EXPECT_TRUE(at::equal(fused::cross_entropy_bf16_(again, targets, /*want_grad=*/false), loss));
    EXPECT_TRUE(at::equal(again, logits));  // without the gradient the logits stay
    auto bad = at::full({rows}, vocab, at::kLong);
    EXPECT_THROW(fused::cross_entropy_bf16_(again, bad, false), std::out_of_range);
  });
}

// The fused ops split rows over ATen's intra-op threads (CI runs the suite on one): two
// threads give the same bits as one, forward and backward.
TEST(FusedOps, TwoThreadsGiveTheBitsOfOne) {
  const int threads = at::get_num_threads();
  const int64_t b = 2, s = 256, heads = 4, d = 64, n = heads * d, vocab = 1003;  // several chunks per op
  at::manual_seed(11);
  const at::Tensor x = at::randn({b, s, n}), w = 1 + 0.1 * at::randn({n});
  const at::Tensor angle = at::randn({1, 1, s, d / 2}).repeat({1, 1, 1, 2});
  const at::Tensor gate = at::randn({b * s, 3 * n}).to(at::kBFloat16), up = at::randn({b * s, 3 * n}).to(at::kBFloat16);
  const at::Tensor logits = (at::randn({b * s, vocab}) * 6).to(at::kBFloat16);
  const at::Tensor targets = at::randint(vocab, {b * s});
  auto run = [&](int threads_now) {
    at::set_num_threads(threads_now);
    auto xn = x.clone().requires_grad_(true);
    auto normed = fused::rms_norm_bf16(xn, w, 1e-6);
    auto q = fused::rope_bf16(normed.view({b, s, heads, d}).transpose(1, 2), angle.cos(), angle.sin());
    auto g = gate.clone().requires_grad_(true), u = up.clone().requires_grad_(true);
    auto act = fused::silu_mul_bf16(g, u);
    (q.to(at::kFloat).square().sum() + act.to(at::kFloat).sum()).backward();
    auto grad_logits = logits.clone();
    auto loss = fused::cross_entropy_bf16_(grad_logits, targets, /*want_grad=*/true);
    return std::vector<at::Tensor>{normed, q, act, xn.grad(), g.grad(), u.grad(), loss, grad_logits};
  };
  const auto one = run(1), two = run(2);
  at::set_num_threads(threads);
  for (size_t i = 0; i < one.size(); ++i) EXPECT_TRUE(at::equal(one[i], two[i])) << "output " << i;
}

// softmax(q k^T * scale, hidden keys at -inf) v in float64, repeating the grouped kv heads.
at::Tensor decode_reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                            double scale) {
  const int64_t group = q.size(1) / k.size(1);
  auto kk = k.to(at::kDouble).repeat_interleave(group, 1), vv = v.to(at::kDouble).repeat_interleave(group, 1);
  auto scores = at::matmul(q.to(at::kDouble), kk.transpose(2, 3)) * scale;
  if (mask.defined()) scores = scores.masked_fill(mask.logical_not(), -INFINITY);
  auto out = at::matmul(at::softmax(scores, -1), vv);
  return out.transpose(1, 2).reshape({q.size(0), 1, -1});
}

// Grouped heads, head sizes that are and are not multiples of 8 and 16 (64 and 128 take
// their own unrolled copies), cache lengths with and without a partial last vector, with
// and without a padding mask, and scores spread wide enough (scale x 8) that most
// exponentials underflow; K and V as transposed views (as split_heads gives them). Each
// body (AVX-512, AVX2, portable; a body the CPU lacks falls back to the next) against
// float64: fp32 within 1e-5, bf16 within one bf16 step (2^-7 at |x| < 2) of float64
// rounded to bf16; and fp32 bodies within 1e-6 (x the spread) of each other.
TEST(DecodeAttention, MatchesTheFloat64CompositionWithGroupsAndMasks) {
  at::manual_seed(5);
  struct Case { int64_t b, hq, hk, len, d; bool masked; double spread; };
  for (const Case c : {Case{2, 6, 2, 1, 64, false, 1}, Case{2, 6, 2, 37, 80, true, 1}, Case{1, 15, 5, 300, 64, false, 1},
                       Case{3, 4, 4, 129, 24, true, 1}, Case{1, 8, 2, 67, 128, true, 1}, Case{2, 4, 1, 200, 64, false, 8},
                       Case{1, 2, 2, 16, 36, false, 1}}) {
    for (auto dt : {at::kFloat, at::kBFloat16}) {
      const at::Tensor q = at::randn({c.b, 1, c.hq, c.d}).to(dt).transpose(1, 2);
      const at::Tensor k = at::randn({c.b, c.len, c.hk, c.d}).to(dt).transpose(1, 2);
      const at::Tensor v = at::randn({c.b, c.len, c.hk, c.d}).to(dt).transpose(1, 2);
      at::Tensor mask;
      if (c.masked) {
        mask = at::rand({c.b, 1, 1, c.len}) > 0.3;
        mask.select(3, 0).fill_(true);  // every row sees a key
      }
      const double scale = c.spread / std::sqrt(static_cast<double>(c.d));
      ASSERT_TRUE(decode_attention_applies(q, k, v, mask));
      const at::Tensor want = decode_reference(q, k, v, mask, scale);
      const at::Tensor best = decode_attention(q, k, v, mask, scale);
      for (const auto body : {DecodeBody::kBest, DecodeBody::kAvx2, DecodeBody::kPortable}) {
        const at::Tensor got = decode_attention(q, k, v, mask, scale, body);
        const std::string what = "len " + std::to_string(c.len) + " d " + std::to_string(c.d) + " " +
                                  c10::toString(dt) + " body " + std::to_string(static_cast<int>(body));
        ASSERT_EQ(got.sizes(), (std::vector<int64_t>{c.b, 1, c.hq * c.d})) << what;
        ASSERT_EQ(got.scalar_type(), dt) << what;
        if (dt == at::kFloat) {
          EXPECT_LE((got.to(at::kDouble) - want).abs().max().item<double>(), 1e-5) << what;
          // (Wider scores amplify the rounding of their sums, which the bodies order differently.)
          EXPECT_LE((got - best).abs().max().item<double>(), 1e-6 * c.spread) << what;
        } else {
          const double step = 1.0 / 128;
          EXPECT_LE((got.to(at::kDouble) - want.to(dt).to(at::kDouble)).abs().max().item<double>(), step) << what;
        }
      }
    }
  }
}

// A row whose keys are all hidden gives zeros (softmax over nothing), in every body; the
// other row is unaffected.
TEST(DecodeAttention, ARowWithEveryKeyHiddenGivesZeros) {
  at::manual_seed(7);
  const at::Tensor q = at::randn({2, 4, 1, 64}), k = at::randn({2, 2, 40, 64}), v = at::randn({2, 2, 40, 64});
  at::Tensor mask = at::ones({2, 1, 1, 40}, at::kBool);
  mask[1].fill_(false);
  for (const auto body : {DecodeBody::kBest, DecodeBody::kAvx2, DecodeBody::kPortable}) {
    const at::Tensor got = decode_attention(q, k, v, mask, 0.125, body);
    EXPECT_TRUE(at::equal(got[1], at::zeros_like(got[1]))) << static_cast<int>(body);
    EXPECT_LE((got[0].to(at::kDouble) - decode_reference(q, k, v, mask, 0.125)[0]).abs().max().item<double>(), 1e-5);
  }
}

TEST(DecodeAttention, TwoThreadsGiveTheBitsOfOneAndItStepsAsideWhereItDoesNotApply) {
  const int threads = at::get_num_threads();
  at::manual_seed(6);
  const at::Tensor q = at::randn({2, 8, 1, 64}), k = at::randn({2, 2, 500, 64}), v = at::randn({2, 2, 500, 64});
  at::set_num_threads(1);
  const at::Tensor one = decode_attention(q, k, v, {}, 0.125);
  at::set_num_threads(2);
  const at::Tensor two = decode_attention(q, k, v, {}, 0.125);
  at::set_num_threads(threads);
  EXPECT_TRUE(at::equal(one, two));
  EXPECT_FALSE(decode_attention_applies(at::randn({2, 8, 2, 64}), k, v, {}));  // two queries
  EXPECT_FALSE(decode_attention_applies(q.to(at::kHalf), k.to(at::kHalf), v.to(at::kHalf), {}));
  EXPECT_FALSE(decode_attention_applies(q, k, v, at::zeros({2, 1, 1, 500})));  // an additive mask
  EXPECT_FALSE(decode_attention_applies(q.clone().requires_grad_(true), k, v, {}));
  {
    c10::InferenceMode inference;
    EXPECT_TRUE(decode_attention_applies(q, k, v, at::ones({1, 1, 1, 500}, at::kBool)));
  }
}

TEST(FusedOps, ModelsTakeTheFusedPathsOnlyUnderBf16Autocast) {
  RMSNorm norm(32, 1e-6);
  norm.weight = at::ones({32});
  auto x = at::randn({2, 3, 32});
  EXPECT_EQ(norm.forward(x).scalar_type(), at::kFloat);
  AutocastGuard autocast(at::kCPU, true, at::kBFloat16);
  EXPECT_EQ(norm.forward(x).scalar_type(), at::kBFloat16);
  norm.weight.requires_grad_(true);  // LN tuning trains it: the composition, with its gradient
  EXPECT_EQ(norm.forward(x).scalar_type(), at::kFloat);
}

// The CPU runs never load LibTorch's CUDA half; asking for it loads it and registers the
// CUDA device as linking would have (whether a GPU is present is a separate question).
TEST(CudaBackend, LoadsOnDemandAndRegistersTheCudaDevice) {
#ifdef PEFT_TORCH_HAS_CUDA
  EXPECT_FALSE(c10::impl::hasDeviceGuardImpl(c10::DeviceType::CUDA));
  EXPECT_EQ(load_cuda_backend(), "");
  EXPECT_TRUE(c10::impl::hasDeviceGuardImpl(c10::DeviceType::CUDA));
  EXPECT_TRUE(at::detail::getCUDAHooks().isBuilt());
  EXPECT_EQ(load_cuda_backend(), "");  // once; the second call answers the same
#else
  EXPECT_NE(load_cuda_backend().find("libc10_cuda"), std::string::npos) << load_cuda_backend();
  EXPECT_FALSE(at::detail::getCUDAHooks().isBuilt());
#endif
}

}  // namespace
}  // namespace peft

