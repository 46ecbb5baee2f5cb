#include "models/checkpoint.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

#include <deque>
#include <mutex>

namespace peft {

namespace {

struct Saved {
  std::function<at::Tensor(const at::Tensor&)> fn;
  at::Tensor rng_state;
};

// Closures live until release_checkpoints(): autograd keeps only an index into this list.
std::mutex g_mu;
std::deque<Saved> g_saved;

struct CheckpointFunction : public torch::autograd::Function<CheckpointFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, int64_t index) {
    ctx->saved_data["index"] = index;
    ctx->save_for_backward({x});
    at::NoGradGuard no_grad;
    Saved* s;
    {
      std::lock_guard<std::mutex> lock(g_mu);
      s = &g_saved[static_cast<size_t>(index)];
    }
    return s->fn(x);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    Saved* s;
    {
      std::lock_guard<std::mutex> lock(g_mu);
      s = &g_saved[static_cast<size_t>(ctx->saved_data["index"].toInt())];
    }
    auto x = ctx->get_saved_variables()[0].detach().requires_grad_(true);
    // Replay the forward's random stream, then put the current one back.
    at::Generator gen = at::detail::getDefaultCPUGenerator();
    at::Tensor now = gen.get_state();
    gen.set_state(s->rng_state);
    at::Tensor y;
    {
      at::AutoGradMode enable(true);
      y = s->fn(x);
    }
    gen.set_state(now);
    torch::autograd::backward({y}, {grad_out[0]});
    return {x.grad(), at::Tensor()};
  }
};

}  // namespace

at::Tensor checkpointed(const std::function<at::Tensor(const at::Tensor&)>& fn, const at::Tensor& x) {
  if (!at::GradMode::is_enabled()) return fn(x);
  int64_t index;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    g_saved.push_back({fn, at::detail::getDefaultCPUGenerator().get_state()});
    index = static_cast<int64_t>(g_saved.size()) - 1;
  }
  // The output must require grad even when x does not (the first block's input comes
  // from a frozen embedding), or backward never reaches the block's parameters.
  return CheckpointFunction::apply(x.requires_grad() ? x : x.detach().requires_grad_(true), index);
}

void release_checkpoints() {
  std::lock_guard<std::mutex> lock(g_mu);
  g_saved.clear();
}

}  // namespace peft
