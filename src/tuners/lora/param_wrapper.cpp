// LoRA on parameters (HF PEFT's lora.ParamWrapper, target_parameters).
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <cmath>
#include <stdexcept>

#include "peft/lora.h"

namespace peft {

LoraParamWrapper::LoraParamWrapper(ParamAdaptableLayer* host, std::vector<Target> ts)
    : ParamAdapter(host), targets(std::move(ts)) {
  const size_t n = targets.size();
  for (size_t i = 0; i < n; ++i) {
    std::string nest;
    for (size_t k = i + 1; k < n; ++k) nest += "base_layer.";
    auto& t = targets[i];
    register_parameter(nest + "lora_A.weight", &t.lora_A, {t.r * t.experts, t.in});
    register_parameter(nest + "lora_B.weight", &t.lora_B, {t.out, t.r * t.experts});
  }
}

std::optional<ParamAdapter::SliceFactors> LoraParamWrapper::factors(const std::string& name, int64_t index) const {
  for (const auto& t : targets) {
    if (t.name != name) continue;
    if (t.experts == 1) return SliceFactors{t.lora_A, t.lora_B, t.scaling};
    // A's rows are expert-major ([E, r, in]); B's columns rank-major ([out, r, E]).
    auto A = t.lora_A.view({t.experts, t.r, t.in}).select(0, index);
    auto B = t.lora_B.view({t.out, t.r, t.experts}).select(2, index);
    return SliceFactors{A, B, t.scaling};
  }
  return std::nullopt;
}

at::Tensor LoraParamWrapper::delta(const Target& t) const {
  if (t.experts == 1) return at::matmul(t.lora_B, t.lora_A) * t.scaling;
  // einsum("o r e, e r i -> e o i")
  auto A = t.lora_A.view({t.experts, t.r, t.in});
  auto B = t.lora_B.view({t.out, t.r, t.experts}).permute({2, 0, 1});
  return at::bmm(B, A) * t.scaling;
}

bool LoraParamWrapper::set_scale(double multiplier) {
  for (auto& t : targets) {
    if (!t.unscaled) t.unscaled = t.scaling;
    t.scaling = *t.unscaled * multiplier;
  }
  return true;
}

void LoraParamWrapper::merge() {
  if (merged_) return;
  c10::NoGradGuard no_grad;
  auto* host = static_cast<ParamAdaptableLayer*>(host_);
  for (const auto& t : targets) {
    at::Tensor* p = host->parameter(t.name);
    p->copy_(p->to(at::kFloat) + delta(t));
  }
  merged_ = true;
}

void LoraParamWrapper::unmerge() {
  if (!merged_) return;
  c10::NoGradGuard no_grad;
  auto* host = static_cast<ParamAdaptableLayer*>(host_);
  for (const auto& t : targets) {
    at::Tensor* p = host->parameter(t.name);
    p->copy_(p->to(at::kFloat) - delta(t));
  }
  merged_ = false;
}

std::vector<at::Tensor*> LoraParamWrapper::trainable_slots() {
  std::vector<at::Tensor*> s;
  for (auto& t : targets) {
    s.push_back(&t.lora_A);
    s.push_back(&t.lora_B);
  }
  return s;
}

void LoraParamWrapper::initialize(const std::string& init, at::Generator& gen) {
  c10::NoGradGuard no_grad;
  const at::Device device = static_cast<ParamAdaptableLayer*>(host_)->parameter(targets[0].name)->device();
  for (auto& t : targets) {
    const int64_t rows = t.r * t.experts;
    // HF PEFT's reset_lora_parameters on nn.Linear(in, r * E): kaiming_uniform_(a=sqrt(5)) A, zero B.
    if (init == "true" || init == "false") {
      const double bound = 1.0 / std::sqrt(static_cast<double>(t.in));
      t.lora_A = at::empty({rows, t.in}, at::kFloat).uniform_(-bound, bound, gen);
      if (init == "false") {
        const double b = 1.0 / std::sqrt(static_cast<double>(rows));
        t.lora_B = at::empty({t.out, rows}, at::kFloat).uniform_(-b, b, gen);
      } else {
        t.lora_B = at::zeros({t.out, rows}, at::kFloat);
      }
    } else if (init == "gaussian") {
      t.lora_A = at::empty({rows, t.in}, at::kFloat).normal_(0.0, 1.0 / static_cast<double>(t.r), gen);
      t.lora_B = at::zeros({t.out, rows}, at::kFloat);
    } else {
      throw std::invalid_argument("init_lora_weights '" + init + "' is not supported with target_parameters");
    }
    t.lora_A = t.lora_A.to(device);
    t.lora_B = t.lora_B.to(device);
  }
}

}  // namespace peft
