// Buckets of gradients summed over the ranks as the backward produces them. A hook after
// each parameter's gradient accumulation (the autograd engine's AccumulateGrad node, the
// place DDP's reducer hooks too) counts the bucket's complete gradients; a bucket whose
// count is full, with every earlier bucket started, is copied into one flat fp32 buffer
// (its gradients, then one "defined" flag per parameter) and its sum starts, while the
// backward goes on below it.
#include "train/gradient_reducer.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/variable.h>

#include <exception>
#include <functional>
#include <iostream>
#include <mutex>
#include <stdexcept>

#include "train/distributed.h"

namespace peft {

namespace {

struct Bucket {
  std::vector<size_t> members;  // indices of the parameters, in the order filled
  size_t waiting = 0;           // members whose gradient is not complete yet
  at::Tensor flat;
  std::function<void()> wait;   // set once the sum has started
};

}  // namespace

struct GradientReducer::State {
  DataParallel* dp = nullptr;
  std::vector<at::Tensor> params;
  std::vector<Bucket> buckets;
  std::vector<size_t> bucket_of;
  std::vector<bool> complete;  // this backward's gradient has arrived
  std::vector<c10::intrusive_ptr<torch::autograd::Node>> accumulators;  // they hold our hooks
  std::vector<uintptr_t> hook_keys;
  std::mutex m;
  bool armed = false, late = false, overlap_off = false;
  size_t next = 0, early = 0;  // the next bucket to start; those started while armed
  std::exception_ptr error;    // of a start inside the backward, rethrown by finish()

  void ready(size_t i);
  void start_ready_buckets();
  void reset();
  void start_the_rest(bool fresh);
  void wait_all();

  struct GradientArrived : torch::autograd::FunctionPostHook {
    GradientArrived(State* s, size_t i) : state(s), index(i) {}
    torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                              const torch::autograd::variable_list&) override {
      state->ready(index);
      return outputs;
    }
    State* state;
    size_t index;
  };
};

namespace {

at::Tensor flat_with_flags(const std::vector<at::Tensor>& params, const std::vector<size_t>& members) {
  std::vector<at::Tensor> parts;
  std::vector<float> flags;
  for (size_t i : members) {
    const auto& p = params[i];
    parts.push_back(p.grad().defined() ? p.grad().detach().to(at::kFloat).reshape(-1)
                                       : at::zeros({p.numel()}, p.options().dtype(at::kFloat)));
    flags.push_back(p.grad().defined() ? 1.f : 0.f);
  }
  parts.push_back(at::tensor(flags, at::kFloat).to(params[members[0]].device()));
  return at::cat(parts);
}

// Writes a summed bucket into its parameters' gradients.
void scatter(const std::vector<at::Tensor>& params, const std::vector<size_t>& members, const at::Tensor& flat) {
  const auto n = static_cast<int64_t>(members.size());
  const at::Tensor flags = flat.narrow(0, flat.numel() - n, n).cpu();
  const float* defined_somewhere = flags.data_ptr<float>();
  int64_t off = 0;
  for (size_t k = 0; k < members.size(); ++k) {
    auto p = params[members[k]];
    const at::Tensor g = flat.narrow(0, off, p.numel()).view(p.sizes()).to(p.scalar_type());
    off += p.numel();
    if (defined_somewhere[k] == 0) continue;
    if (p.grad().defined()) p.mutable_grad().copy_(g);
    else p.mutable_grad() = g.clone();
  }
}

}  // namespace

// Called by the autograd engine, after parameter i's gradient accumulated.
void GradientReducer::State::ready(size_t i) {
  std::lock_guard<std::mutex> lk(m);
  if (!armed) return;
  Bucket& b = buckets[bucket_of[i]];
  if (complete[i]) {
    if (b.wait) late = true;  // accumulated into after its copy was summed
    return;
  }
  complete[i] = true;
  if (--b.waiting == 0) start_ready_buckets();
}

// Starts the buckets whose gradients are complete, in order. An error is kept for
// finish(): thrown here it would surface from inside the autograd engine.
void GradientReducer::State::start_ready_buckets() {
  try {
    while (!error && next < buckets.size() && buckets[next].waiting == 0) {
      Bucket& b = buckets[next++];
      b.flat = flat_with_flags(params, b.members);
      b.wait = dp->start_sum(b.flat);
      if (armed) ++early;
    }
  } catch (...) {
    error = std::current_exception();
  }
}

void GradientReducer::State::reset() {
  complete.assign(params.size(), false);
  for (auto& b : buckets) {
    b.waiting = b.members.size();
    b.flat = at::Tensor();
    b.wait = nullptr;
  }
  next = early = 0;
  late = false;
  error = nullptr;
}

// After the backward: starts, in order, every bucket not started yet (all of them when
// `fresh`, or when nothing armed this step: a rank without a micro-batch, or overlap off).
void GradientReducer::State::start_the_rest(bool fresh) {
  std::lock_guard<std::mutex> lk(m);
  if (fresh || !armed) reset();
  armed = false;
  for (size_t k = next; k < buckets.size(); ++k) buckets[k].waiting = 0;  // final now
  start_ready_buckets();
}

void GradientReducer::State::wait_all() {
  if (error) std::rethrow_exception(error);
  for (auto& b : buckets) b.wait();
}

GradientReducer::GradientReducer(DataParallel& dp, std::vector<at::Tensor> params, int64_t bucket_bytes)
    : s_(std::make_unique<State>()) {
  if (bucket_bytes < 1) throw std::invalid_argument("GradientReducer: bucket_bytes must be positive");
  auto& s = *s_;
  s.dp = &dp;
  s.params = std::move(params);
  if (dp.world_size() == 1 || s.params.empty()) return;
  s.bucket_of.resize(s.params.size());
  int64_t cap = std::min(kFirstBucketBytes, bucket_bytes), filled = 0;
  for (size_t i = s.params.size(); i-- > 0;) {
    const int64_t bytes = s.params[i].numel() * int64_t{4};
    if (s.buckets.empty() || (filled > 0 && filled + bytes > cap)) {
      if (!s.buckets.empty()) cap = bucket_bytes;
      s.buckets.emplace_back();
      filled = 0;
    }
    s.buckets.back().members.push_back(i);
    s.bucket_of[i] = s.buckets.size() - 1;
    filled += bytes;
  }
  // A parameter without an accumulator (one that needs no gradient) never completes its
  // bucket in the backward: that bucket, and those after it, start in finish().
  for (size_t i = 0; i < s.params.size(); ++i) {
    if (!s.params[i].requires_grad() || !s.params[i].is_leaf()) continue;
    auto acc = torch::autograd::impl::grad_accumulator(s.params[i]);
    if (!acc) continue;
    s.hook_keys.push_back(acc->add_post_hook(std::make_unique<State::GradientArrived>(&s, i)));
    s.accumulators.push_back(std::move(acc));
  }
  s.reset();
}

GradientReducer::~GradientReducer() {
  for (size_t k = 0; k < s_->accumulators.size(); ++k) s_->accumulators[k]->del_post_hook(s_->hook_keys[k]);
}

void GradientReducer::arm() {
  if (s_->buckets.empty() || s_->overlap_off) return;
  std::lock_guard<std::mutex> lk(s_->m);
  s_->reset();
  s_->armed = true;
}

void GradientReducer::finish() {
  auto& s = *s_;
  if (s.buckets.empty()) return;
  s.start_the_rest(/*fresh=*/false);
  s.wait_all();
  if (!s.overlap_off) {
    // Every rank must agree whether a sum started too early anywhere.
    at::Tensor late = at::scalar_tensor(s.late ? 1.0 : 0.0, at::kDouble);
    s.dp->all_reduce_sum(late);
    if (late.item<double>() > 0) {
      s.overlap_off = true;
      if (s.dp->is_main())
        std::cerr << "note: a parameter's gradient arrives more than once per backward (shared by checkpointed "
                     "blocks): gradients are summed over the ranks after the backward from now on\n";
      s.start_the_rest(/*fresh=*/true);  // again, from the local gradients, whole now
      s.wait_all();
    }
  }
  for (const auto& b : s.buckets) scatter(s.params, b.members, b.flat);
}

size_t GradientReducer::buckets() const { return s_->buckets.size(); }
size_t GradientReducer::started_in_backward() const { return s_->early; }
bool GradientReducer::overlap_disabled() const { return s_->overlap_off; }

}  // namespace peft
