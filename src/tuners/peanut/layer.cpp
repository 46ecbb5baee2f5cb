// PeanutLayer: HF PEFT 0.21's peanut.Linear (_compute_delta_weight, forward, merge, unmerge).
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <utility>

#include "peft/layers.h"
#include "peft/peanut.h"
#include "tuners/delta_merge.h"

namespace peft {

namespace {

// ACT2FN keys beyond the ones the models use (peft/layers.h's activation()), as transformers
// defines them; nullptr-free: unknown names fall through to activation().
bool extra_activation(const std::string& name, const at::Tensor& x, at::Tensor* y) {
  if (name == "linear") *y = x;
  else if (name == "sigmoid") *y = at::sigmoid(x);
  else if (name == "relu6") *y = at::hardtanh(x, 0, 6);
  else if (name == "leaky_relu") *y = at::leaky_relu(x, 0.01);
  else if (name == "relu2") *y = at::relu(x).square();
  else if (name == "mish") *y = at::mish(x);
  else if (name == "hardswish") *y = at::hardswish(x);
  else if (name == "gelu_python") *y = at::gelu(x);
  else if (name == "gelu_python_tanh" || name == "gelu_accurate") *y = at::gelu(x, "tanh");
  else return false;
  return true;
}

at::Tensor peanut_activation(const std::string& name, const at::Tensor& x) {
  at::Tensor y;
  return extra_activation(name, x, &y) ? y : activation(name, x);
}

}  // namespace

bool peanut_knows_activation(const std::string& name) {
  static const char* known[] = {"relu",    "gelu",       "gelu_new", "gelu_pytorch_tanh", "gelu_fast",
                                "silu",    "swish",      "tanh",     "quick_gelu",        "linear",
                                "sigmoid", "relu6",      "leaky_relu", "relu2",           "mish",
                                "hardswish", "gelu_python", "gelu_python_tanh", "gelu_accurate"};
  for (const char* k : known)
    if (name == k) return true;
  return false;
}

PeanutLayer::PeanutLayer(AdaptableLayer* host, int64_t r_, int64_t depth_, std::string act_fn_, double scaling_)
    : LayerAdapter(host), r(r_), depth(depth_), act_fn(std::move(act_fn_)), scaling(scaling_) {
  const int64_t out = host->output_dim();
  A = at::zeros({r, out}, at::kFloat);
  B = at::zeros({out, r}, at::kFloat);
  register_parameter("peanut_A.weight", &A, {r, out});
  register_parameter("peanut_B.weight", &B, {out, r});
  // Sized once: the slots below point into these vectors.
  encoders.assign(depth, at::Tensor());
  decoders.assign(depth, at::Tensor());
  for (int64_t i = 0; i < depth; ++i) {
    encoders[i] = at::zeros({r, r}, at::kFloat);
    decoders[i] = at::zeros({r, r}, at::kFloat);
    register_parameter("peanut_encoders." + std::to_string(i) + ".weight", &encoders[i], {r, r});
    register_parameter("peanut_decoders." + std::to_string(i) + ".weight", &decoders[i], {r, r});
  }
}

std::vector<at::Tensor*> PeanutLayer::trainable_slots() {
  std::vector<at::Tensor*> out = {&A, &B};
  for (int64_t i = 0; i < depth; ++i) {
    out.push_back(&encoders[i]);
    out.push_back(&decoders[i]);
  }
  return out;
}

// HF's _compute_delta_weight: the network runs on the rows of Wᵀ [in, out].
at::Tensor PeanutLayer::delta_from(const at::Tensor& w) const {
  const at::Tensor wt = (host_->weight_is_in_out() ? w : w.t()).to(A.scalar_type());
  at::Tensor h = peanut_activation(act_fn, at::matmul(wt, A.t()));
  std::vector<at::Tensor> residuals;
  for (int64_t i = 0; i < depth; ++i) {
    residuals.push_back(h);
    h = peanut_activation(act_fn, at::linear(h, encoders[i]));
  }
  for (int64_t i = 0; i < depth; ++i) h = peanut_activation(act_fn, at::linear(h, decoders[i])) + residuals[depth - 1 - i];
  return (at::linear(h, B) * scaling).t();
}

at::Tensor PeanutLayer::delta_weight() const { return delta_from(host_->dense_weight()); }

at::Tensor PeanutLayer::forward(const at::Tensor& x, const at::Tensor& out) {
  const at::Tensor d = delta_weight();
  return out + at::linear(x.to(d.scalar_type()), d).to(out.scalar_type());
}

void PeanutLayer::merge() {
  if (merged_) return;
  c10::NoGradGuard g;
  weight_before_merge_ = host_->dense_weight().clone();
  add_delta_to_host(*host_, delta_from(weight_before_merge_), +1);
  merged_ = true;
}

void PeanutLayer::unmerge() {
  if (!merged_) return;
  c10::NoGradGuard g;
  host_->assign_weight(weight_before_merge_);
  weight_before_merge_ = at::Tensor();
  merged_ = false;
}

}  // namespace peft
