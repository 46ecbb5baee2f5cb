#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include "peft/layers.h"
#include "tuners/delta_merge.h"
#include "peft/lycoris.h"

namespace peft {

at::Tensor DeltaWeightAdapter::forward(const at::Tensor& x, const at::Tensor& out) {
  return out + at::linear(x, delta_weight().to(x.scalar_type()));
}

bool DeltaWeightAdapter::set_scale(double multiplier) {
  if (!unscaled_) unscaled_ = scaling;
  scaling = *unscaled_ * multiplier;
  return true;
}

void DeltaWeightAdapter::merge() {
  if (merged_) return;
  add_delta_to_host(*host_, delta_weight(), +1);
  merged_ = true;
}

void DeltaWeightAdapter::unmerge() {
  if (!merged_) return;
  add_delta_to_host(*host_, delta_weight(), -1);
  merged_ = false;
}

LoHaLayer::LoHaLayer(AdaptableLayer* host, int64_t r) : DeltaWeightAdapter(host) {
  const int64_t out = host->output_dim(), in = host->input_dim();
  w1_a = at::zeros({out, r}, at::kFloat);
  w1_b = at::zeros({r, in}, at::kFloat);
  w2_a = at::zeros({out, r}, at::kFloat);
  w2_b = at::zeros({r, in}, at::kFloat);
  register_parameter("hada_w1_a", &w1_a, {out, r});
  register_parameter("hada_w1_b", &w1_b, {r, in});
  register_parameter("hada_w2_a", &w2_a, {out, r});
  register_parameter("hada_w2_b", &w2_b, {r, in});
}

at::Tensor LoHaLayer::delta_weight() const { return at::matmul(w1_a, w1_b) * at::matmul(w2_a, w2_b) * scaling; }

std::pair<int64_t, int64_t> lokr_factorization(int64_t dimension, int64_t factor) {
  if (factor > 0 && dimension % factor == 0) return {factor, dimension / factor};
  if (factor == -1) factor = dimension;
  int64_t m = 1, n = dimension, length = m + n;
  while (m < n) {
    int64_t new_m = m + 1;
    while (dimension % new_m != 0) ++new_m;
    const int64_t new_n = dimension / new_m;
    if (new_m + new_n > length || new_m > factor) break;
    m = new_m;
    n = new_n;
  }
  if (m > n) std::swap(m, n);
  return {m, n};
}

LoKrLayer::LoKrLayer(AdaptableLayer* host, int64_t r, bool decompose_both, int64_t factor) : DeltaWeightAdapter(host) {
  const auto [in_m, in_n] = lokr_factorization(host->input_dim(), factor);
  const auto [out_l, out_k] = lokr_factorization(host->output_dim(), factor);
  // HF's rules: w1 is factored only with decompose_both and a small r; w2 when r is small.
  full_w1 = !(decompose_both && static_cast<double>(r) < std::max(out_l, in_m) / 2.0);
  full_w2 = !(static_cast<double>(r) < std::max(out_k, in_n) / 2.0);
  auto add = [&](const char* name, at::Tensor& t, std::vector<int64_t> shape) {
    t = at::zeros(shape, at::kFloat);
    register_parameter(name, &t, shape);
  };
  if (full_w1) {
    add("lokr_w1", w1, {out_l, in_m});
  } else {
    add("lokr_w1_a", w1_a, {out_l, r});
    add("lokr_w1_b", w1_b, {r, in_m});
  }
  if (full_w2) {
    add("lokr_w2", w2, {out_k, in_n});
  } else {
    add("lokr_w2_a", w2_a, {out_k, r});
    add("lokr_w2_b", w2_b, {r, in_n});
  }
}

std::vector<at::Tensor*> LoKrLayer::trainable_slots() {
  std::vector<at::Tensor*> out;
  for (auto* t : {&w1, &w1_a, &w1_b, &w2, &w2_a, &w2_b})
    if (t->defined()) out.push_back(t);
  return out;
}

at::Tensor LoKrLayer::delta_weight() const {
  const auto a = full_w1 ? w1 : at::matmul(w1_a, w1_b);
  const auto b = full_w2 ? w2 : at::matmul(w2_a, w2_b);
  return at::kron(a, b) * scaling;
}

}  // namespace peft
