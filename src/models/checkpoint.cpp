#include "models/checkpoint.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/autocast_mode.h>
#include <ATen/core/ivalue.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

#include <stdexcept>
#include <string>

#include "util/autocast.h"

namespace peft {

namespace {

// What backward needs to recompute one block: the block and the random state(s) its
// forward started from. It lives in the autograd node, so it is freed with the graph.
struct Replay : torch::CustomClassHolder {
  CheckpointedFn fn;
  // The block's inputs in fn's order: defined ones travel through the autograd node (and
  // are saved there), undefined ones are passed to fn as they are.
  std::vector<bool> defined;
  std::vector<bool> needs_grad;  // per defined input
  at::Device device = at::kCPU;
  at::Tensor cpu_rng, device_rng;  // device_rng: the accelerator's generator, when x is on one
  // Autocast as the forward ran: backward runs after the caller's autocast scope has
  // ended, and the recompute must compute in the same precision (as torch's checkpoint).
  bool autocast = false;
  at::ScalarType autocast_dtype = at::kBFloat16;
  bool offload = false;  // the hidden state (vars[0]) is saved in host memory

  at::Tensor call(const std::vector<at::Tensor>& vars) const {
    std::vector<at::Tensor> inputs;
    size_t k = 0;
    for (bool d : defined) inputs.push_back(d ? vars[k++] : at::Tensor());
    return fn(inputs);
  }
};

at::Generator device_generator(at::Device d) { return at::globalContext().defaultGenerator(d); }

thread_local CheckpointPolicy t_policy;
thread_local int64_t t_blocks = 0;  // blocks checkpointed() saw in the current scope

// A copy of x in host memory, pinned when x is on an accelerator so that the copy does not
// wait for the device; the caching host allocator keeps the block until the copy is done.
at::Tensor to_host(const at::Tensor& x) {
  const bool device = !x.is_cpu();
  at::Tensor host = at::empty(x.sizes(), x.options().device(at::kCPU).pinned_memory(device));
  host.copy_(x, /*non_blocking=*/device);
  return host;
}

struct CheckpointFunction : public torch::autograd::Function<CheckpointFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, at::TensorList vars,
                            c10::intrusive_ptr<Replay> replay) {
    if (replay->offload) {
      // Only the hidden state goes to the host: the context tensors (an encoder's output,
      // masks) are shared by every layer, so a copy per layer would only add.
      ctx->saved_data["host"] = to_host(vars[0]);
      ctx->save_for_backward(vars.slice(1).vec());
    } else {
      ctx->save_for_backward(vars.vec());
    }
    ctx->saved_data["replay"] = c10::IValue::make_capsule(replay);
    at::NoGradGuard no_grad;
    return replay->call(vars.vec());
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    auto replay = c10::static_intrusive_pointer_cast<Replay>(ctx->saved_data["replay"].toCapsule());
    // Fresh leaves: the recompute's backward stops at them, so gradients flow on from here
    // through this node's edges, never twice into the graph that made the inputs.
    auto vars = ctx->get_saved_variables();
    if (replay->offload)
      vars.insert(vars.begin(), ctx->saved_data["host"].toTensor().to(replay->device, /*non_blocking=*/true));
    for (size_t i = 0; i < vars.size(); ++i) vars[i] = vars[i].detach().requires_grad_(replay->needs_grad[i]);
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
      y = replay->call(vars);
    }
    cpu.set_state(cpu_now);
    if (device_now.defined()) device_generator(replay->device).set_state(device_now);
    torch::autograd::backward({y}, {grad_out[0]});
    torch::autograd::variable_list grads;
    for (size_t i = 0; i < vars.size(); ++i) grads.push_back(replay->needs_grad[i] ? vars[i].grad() : at::Tensor());
    grads.emplace_back();  // the replay
    return grads;
  }
};

}  // namespace

at::Tensor checkpointed(const CheckpointedFn& fn, const std::vector<at::Tensor>& inputs) {
  if (!at::GradMode::is_enabled()) return fn(inputs);
  if (inputs.empty() || !inputs[0].defined()) throw std::logic_error("checkpointed: the hidden state is undefined");
  if (t_blocks++ % t_policy.every != 0) return fn(inputs);
  const auto& x = inputs[0];
  auto replay = c10::make_intrusive<Replay>();
  replay->fn = fn;
  std::vector<at::Tensor> vars;
  for (size_t i = 0; i < inputs.size(); ++i) {
    replay->defined.push_back(inputs[i].defined());
    if (!inputs[i].defined()) continue;
    // The output must require grad even when x does not (the first block's input comes
    // from a frozen embedding), or backward never reaches the block's parameters.
    vars.push_back(i == 0 && !x.requires_grad() ? x.detach().requires_grad_(true) : inputs[i]);
    replay->needs_grad.push_back(vars.back().requires_grad());
  }
  replay->device = x.device();
  replay->autocast = at::autocast::is_autocast_enabled(x.device().type());
  replay->autocast_dtype = at::autocast::get_autocast_dtype(x.device().type());
  replay->offload = t_policy.offload;
  replay->cpu_rng = at::detail::getDefaultCPUGenerator().get_state();
  if (!x.device().is_cpu()) replay->device_rng = device_generator(x.device()).get_state();
  return CheckpointFunction::apply(at::TensorList(vars), replay);
}

CheckpointPolicyScope::CheckpointPolicyScope(CheckpointPolicy policy) : outer_(t_policy), outer_blocks_(t_blocks) {
  if (policy.every < 1)
    throw std::invalid_argument("checkpoint policy: every must be at least 1, got " + std::to_string(policy.every));
  t_policy = policy;
  t_blocks = 0;
}

CheckpointPolicyScope::~CheckpointPolicyScope() {
  t_policy = outer_;
  t_blocks = outer_blocks_;
}

at::Tensor checkpointed(const std::function<at::Tensor(const at::Tensor&)>& fn, const at::Tensor& x) {
  return checkpointed([fn](const std::vector<at::Tensor>& v) { return fn(v[0]); }, std::vector<at::Tensor>{x});
}

}  // namespace peft
