#include "models/checkpoint.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/autocast_mode.h>
#include <ATen/core/ivalue.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

#include "util/autocast.h"

namespace peft {

namespace {

// What backward needs to recompute one block: the block and the random state(s) its
// forward started from. It lives in the autograd node, so it is freed with the graph.
struct Replay : torch::CustomClassHolder {
  std::function<at::Tensor(const at::Tensor&)> fn;
  at::Device device = at::kCPU;
  at::Tensor cpu_rng, device_rng;  // device_rng: the accelerator's generator, when x is on one
  // Autocast as the forward ran: backward runs after the caller's autocast scope has
  // ended, and the recompute must compute in the same precision (as torch's checkpoint).
  bool autocast = false;
  at::ScalarType autocast_dtype = at::kBFloat16;
};

at::Generator device_generator(at::Device d) { return at::globalContext().defaultGenerator(d); }

struct CheckpointFunction : public torch::autograd::Function<CheckpointFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            c10::intrusive_ptr<Replay> replay) {
    ctx->save_for_backward({x});
    ctx->saved_data["replay"] = c10::IValue::make_capsule(replay);
    at::NoGradGuard no_grad;
    return replay->fn(x);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    auto replay = c10::static_intrusive_pointer_cast<Replay>(ctx->saved_data["replay"].toCapsule());
    auto x = ctx->get_saved_variables()[0].detach().requires_grad_(true);
    // Replay the forward's random streams (dropout masks repeat), then restore them.
    at::Generator cpu = at::detail::getDefaultCPUGenerator();
    const at::Tensor cpu_now = cpu.get_state();
    cpu.set_state(replay->cpu_rng);
    at::Tensor device_now;
    if (replay->device_rng.defined()) {
      at::Generator g = device_generator(replay->device);
      device_now = g.get_state();
      g.set_state(replay->device_rng);
    }
    at::Tensor y;
    {
      at::AutoGradMode enable(true);
      AutocastGuard autocast(replay->device.type(), replay->autocast, replay->autocast_dtype);
      y = replay->fn(x);
    }
    cpu.set_state(cpu_now);
    if (device_now.defined()) device_generator(replay->device).set_state(device_now);
    torch::autograd::backward({y}, {grad_out[0]});
    return {x.grad(), at::Tensor()};
  }
};

}  // namespace

at::Tensor checkpointed(const std::function<at::Tensor(const at::Tensor&)>& fn, const at::Tensor& x) {
  if (!at::GradMode::is_enabled()) return fn(x);
  auto replay = c10::make_intrusive<Replay>();
  replay->fn = fn;
  replay->device = x.device();
  replay->autocast = at::autocast::is_autocast_enabled(x.device().type());
  replay->autocast_dtype = at::autocast::get_autocast_dtype(x.device().type());
  replay->cpu_rng = at::detail::getDefaultCPUGenerator().get_state();
  if (!x.device().is_cpu()) replay->device_rng = device_generator(x.device()).get_state();
  // The output must require grad even when x does not (the first block's input comes
  // from a frozen embedding), or backward never reaches the block's parameters.
  return CheckpointFunction::apply(x.requires_grad() ? x : x.detach().requires_grad_(true), replay);
}

}  // namespace peft
