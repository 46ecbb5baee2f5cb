// Gradient checkpointing's policy (src/models/checkpoint.h): which blocks are recomputed,
// and the offloaded input, checked against the same chain of blocks run without it.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include <memory>
#include <vector>

#include "models/checkpoint.h"

namespace peft {
namespace {

// A chain of n blocks x -> tanh(x W_i), each checkpointed; counts the blocks' calls.
struct Chain {
  std::vector<at::Tensor> w;
  std::shared_ptr<int> calls = std::make_shared<int>(0);

  explicit Chain(int n) {
    at::manual_seed(0);
    for (int i = 0; i < n; ++i) w.push_back((at::randn({8, 8}, at::kDouble) * 0.5).requires_grad_(true));
  }
  at::Tensor forward(at::Tensor h, bool checkpoint) const {
    for (const auto& wi : w) {
      auto block = [wi, calls = calls](const at::Tensor& x) {
        ++*calls;
        return at::tanh(at::matmul(x, wi));
      };
      h = checkpoint ? checkpointed(block, h) : block(h);
    }
    return h;
  }
  std::vector<at::Tensor> grads(const at::Tensor& x, bool checkpoint) const {
    for (const auto& wi : w) wi.mutable_grad() = at::Tensor();
    forward(x, checkpoint).pow(2).sum().backward();
    std::vector<at::Tensor> g;
    for (const auto& wi : w) g.push_back(wi.grad().clone());
    return g;
  }
};

void expect_same(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(at::equal(a[i], b[i])) << "block " << i;
}

TEST(CheckpointPolicy, EveryKthBlockIsRecomputedAndGradientsAreUnchanged) {
  Chain chain(5);
  const at::Tensor x = at::randn({4, 8}, at::kDouble);
  const auto plain = chain.grads(x, false);
  for (int64_t every : {1, 2, 3, 5, 7}) {
    *chain.calls = 0;
    std::vector<at::Tensor> got;
    {
      CheckpointPolicyScope scope({every, false});
      got = chain.grads(x, true);
    }
    const int recomputed = (5 + every - 1) / every;  // blocks 0, every, 2 * every, ... < 5
    EXPECT_EQ(*chain.calls, 5 + recomputed) << "every " << every;
    expect_same(got, plain);
  }
  // Outside a scope: every block.
  *chain.calls = 0;
  expect_same(chain.grads(x, true), plain);
  EXPECT_EQ(*chain.calls, 10);
}

TEST(CheckpointPolicy, ScopesNestAndRestore) {
  Chain chain(4);
  const at::Tensor x = at::randn({2, 8}, at::kDouble);
  CheckpointPolicyScope outer({2, false});
  {
    CheckpointPolicyScope inner({4, false});
    *chain.calls = 0;
    chain.grads(x, true);
    EXPECT_EQ(*chain.calls, 4 + 1);
  }
  // The outer scope's count went on from where it was (0 blocks): blocks 0 and 2 again.
  *chain.calls = 0;
  chain.grads(x, true);
  EXPECT_EQ(*chain.calls, 4 + 2);
  EXPECT_THROW(CheckpointPolicyScope({0, false}), std::invalid_argument);
}

// With offload the block keeps a copy of its input, not the input: an in-place change made
// after the forward, which autograd refuses when the input itself is saved, no longer
// reaches the recompute.
TEST(CheckpointPolicy, OffloadKeepsACopyOfTheInput) {
  Chain chain(3);
  const at::Tensor x0 = at::randn({4, 8}, at::kDouble);
  const auto plain = chain.grads(x0, false);
  auto run_and_clobber = [&](bool offload) {
    CheckpointPolicyScope scope({1, offload});
    for (const auto& wi : chain.w) wi.mutable_grad() = at::Tensor();
    at::Tensor x = x0.clone();
    at::Tensor y = chain.forward(x, true);
    x.mul_(2);
    y.pow(2).sum().backward();
    std::vector<at::Tensor> g;
    for (const auto& wi : chain.w) g.push_back(wi.grad().clone());
    return g;
  };
  expect_same(run_and_clobber(true), plain);
  EXPECT_THROW(run_and_clobber(false), c10::Error);
}

}  // namespace
}  // namespace peft
