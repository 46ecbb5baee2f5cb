// GloraLayer: HF PEFT 0.21's GloraLinear (the five paths, forward, merge, unmerge).
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <utility>

#include "peft/glora.h"

namespace peft {

at::Tensor GloraPath::value() const {
  switch (kind) {
    case Kind::kLora: return at::mm(Xd, Xu);
    case Kind::kVector: return X;
    case Kind::kConstant: return X.reshape({});
    case Kind::kNone: break;
  }
  return zeros;
}

namespace {

using Kind = GloraPath::Kind;

Kind kind_of(const std::string& s) {
  if (s == "lora") return Kind::kLora;
  if (s == "vector") return Kind::kVector;
  if (s == "constant") return Kind::kConstant;
  return Kind::kNone;
}

// A path of `kind` producing a [rows, cols] value (cols 0: a [rows] vector), at zero.
// HF's vector paths are [rows, 1] columns for matrices and [rows] for bias-sized ones.
GloraPath make_path(Kind kind, int64_t rows, int64_t cols, int64_t r, at::Device device) {
  GloraPath p;
  p.kind = kind;
  const auto f32 = at::TensorOptions(at::kFloat);
  switch (kind) {
    case Kind::kLora:
      p.Xd = at::zeros({rows, r}, f32);
      p.Xu = at::zeros({r, cols}, f32);
      break;
    case Kind::kVector: p.X = cols ? at::zeros({rows, 1}, f32) : at::zeros({rows}, f32); break;
    case Kind::kConstant: p.X = at::zeros({1}, f32); break;
    case Kind::kNone:
      p.zeros = cols ? at::zeros({rows, cols}, f32.device(device)) : at::zeros({rows}, f32.device(device));
      break;
  }
  return p;
}

}  // namespace

GloraLayer::GloraLayer(AdaptableLayer* host, const GloraConfig& c, const std::string& key_prefix)
    : LayerAdapter(host) {
  const int64_t in = host->input_dim(), out = host->output_dim(), r = c.r;
  const at::Tensor* b = host->bias_tensor();
  has_bias = b && b->defined();
  const auto device = host->weight_tensor()->device();
  const Kind ab = kind_of(c.config_A_B);
  const Kind ck = has_bias ? kind_of(c.config_C) : Kind::kNone;
  const Kind de = has_bias ? kind_of(c.config_D_E) : Kind::kNone;
  A = make_path(ab, out, in, r, device);
  B = make_path(ab, out, in, r, device);
  C = make_path(ck, in, 1, r, device);
  D = make_path(de, out, 0, r, device);
  E = make_path(de, out, 0, r, device);
  for (auto& [name, p] : paths()) {
    if (p->kind == Kind::kLora) {
      register_parameter(name + ".Xd", &p->Xd, p->Xd.sizes().vec());
      register_parameter(name + ".Xu", &p->Xu, p->Xu.sizes().vec());
    } else if (p->kind == Kind::kNone) {
      buffers_.push_back({key_prefix + name + ".zeros", &p->zeros});  // HF files its buffer
    } else {
      register_parameter(name + ".X", &p->X, p->X.sizes().vec());
    }
  }
}

std::vector<std::pair<std::string, GloraPath*>> GloraLayer::paths() {
  return {{"glora_A", &A}, {"glora_B", &B}, {"glora_C", &C}, {"glora_D", &D}, {"glora_E", &E}};
}

std::vector<at::Tensor*> GloraLayer::trainable_slots() {
  std::vector<at::Tensor*> out;
  for (auto& [_, p] : paths()) {
    if (p->kind == Kind::kLora) out.insert(out.end(), {&p->Xd, &p->Xu});
    if (p->kind == Kind::kVector || p->kind == Kind::kConstant) out.push_back(&p->X);
  }
  return out;
}

std::vector<LayerAdapter::SharedSlot> GloraLayer::shared_slots() { return buffers_; }

// y + x (W ⊙ A + B)ᵀ + (b ⊙ D + E + W C): HF's F.linear(x, W_eff, b_eff) less the base.
at::Tensor GloraLayer::forward(const at::Tensor& x, const at::Tensor& out) {
  const auto dt = x.scalar_type();
  const at::Tensor w = host_->dense_weight().to(dt);
  auto as = [&](const GloraPath& p) { return p.value().to(w.device(), dt); };
  auto y = at::linear(x, w * as(A) + as(B));
  if (has_bias) {
    const at::Tensor b = host_->bias_tensor()->to(dt);
    y = y + (b * as(D) + as(E) + at::matmul(w, as(C)).squeeze(-1));
  }
  return out + y.to(out.scalar_type());
}

namespace {

// The GLoRA adapters merged into `host`, `except` left out.
std::vector<GloraLayer*> merged_gloras(const AdaptableLayer& host, const GloraLayer* except) {
  std::vector<GloraLayer*> out;
  for (const auto& n : host.adapter_names())
    if (auto* g = dynamic_cast<GloraLayer*>(host.adapter(n)); g && g != except && g->merged()) out.push_back(g);
  return out;
}

struct WeightAndBias {
  at::Tensor w, b;  // b undefined without a bias
};

// HF's unmerge: W0 = (W - ΣB) / (1 + ΣA), b0 = (b - ΣE - Σ W0 C) / (1 + ΣD).
WeightAndBias divide_out(const WeightAndBias& merged, const std::vector<GloraLayer*>& gs) {
  auto as = [&](const GloraPath& p) { return p.value().to(merged.w.device(), merged.w.scalar_type()); };
  auto sum_a = at::zeros_like(merged.w), sum_b = at::zeros_like(merged.w);
  for (auto* g : gs) {
    sum_a = sum_a + as(g->A);
    sum_b = sum_b + as(g->B);
  }
  WeightAndBias base{(merged.w - sum_b) / (1.0 + sum_a), {}};
  if (merged.b.defined()) {
    auto sum_d = at::zeros_like(merged.b), sum_e = at::zeros_like(merged.b), sum_wc = at::zeros_like(merged.b);
    for (auto* g : gs) {
      sum_d = sum_d + as(g->D);
      sum_e = sum_e + as(g->E);
      sum_wc = sum_wc + at::matmul(base.w, as(g->C)).squeeze(-1);
    }
    base.b = (merged.b - sum_e - sum_wc) / (1.0 + sum_d);
  }
  return base;
}

// HF's merge of `gs` against the original W0, b0, written into `host`.
void fold_in(AdaptableLayer& host, const WeightAndBias& base, const std::vector<GloraLayer*>& gs) {
  auto as = [&](const GloraPath& p) { return p.value().to(base.w.device(), base.w.scalar_type()); };
  auto w = base.w.clone();
  auto b = base.b.defined() ? base.b.clone() : at::Tensor();
  for (auto* g : gs) {
    w = w + base.w * as(g->A) + as(g->B);
    if (b.defined()) b = b + base.b * as(g->D) + as(g->E) + at::matmul(base.w, as(g->C)).squeeze(-1);
  }
  host.assign_weight(w);
  if (b.defined()) host.bias_tensor()->copy_(b);
}

WeightAndBias current(AdaptableLayer& host, bool has_bias) {
  return {host.dense_weight(), has_bias ? host.bias_tensor()->detach() : at::Tensor()};
}

}  // namespace

void GloraLayer::merge() {
  if (merged_) return;
  c10::NoGradGuard g;
  auto others = merged_gloras(*host_, this);
  const auto base = others.empty() ? current(*host_, has_bias) : divide_out(current(*host_, has_bias), others);
  others.push_back(this);
  fold_in(*host_, base, others);
  merged_ = true;
}

void GloraLayer::unmerge() {
  if (!merged_) return;
  c10::NoGradGuard g;
  const auto base = divide_out(current(*host_, has_bias), merged_gloras(*host_, nullptr));
  fold_in(*host_, base, merged_gloras(*host_, this));
  merged_ = false;
}

}  // namespace peft
