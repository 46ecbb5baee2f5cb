#include "tuners/lora/init_conversion.h"

#include <ATen/ATen.h>

#include <cmath>
#include <map>
#include <stdexcept>

namespace peft {

bool init_rewrites_base(const std::string& init) {
  return init == "pissa" || init.rfind("pissa_niter_", 0) == 0 || init == "olora" || init == "corda" ||
         init == "lora_ga";
}

NamedTensors lora_delta_from_init(const NamedTensors& trained, const NamedTensors& initial) {
  std::map<std::string, at::Tensor> init(initial.begin(), initial.end());
  NamedTensors out;
  for (const auto& [key, t] : trained) {
    const bool a = key.find("lora_A") != std::string::npos, b = key.find("lora_B") != std::string::npos;
    if (!a && !b) {
      out.emplace_back(key, t);
      continue;
    }
    auto it = init.find(key);
    if (it == init.end()) throw std::runtime_error("converting to a plain LoRA: no initial value of '" + key + "'");
    const auto t0 = it->second.to(t.device(), t.scalar_type());
    out.emplace_back(key, a ? at::cat({t, t0}, 0) : at::cat({t, -t0}, 1));
  }
  return out;
}

std::unique_ptr<LoraConfig> plain_lora_config(const LoraConfig& c) {
  if (c.use_dora) throw std::invalid_argument("converting a " + c.init_lora_weights + " DoRA adapter to a plain LoRA is not supported");
  if (c.use_rslora && (!c.rank_pattern.empty() || !c.alpha_pattern.empty()))
    throw std::invalid_argument("converting to a plain LoRA is not supported with use_rslora and rank or alpha "
                                "patterns (as in HF PEFT)");
  auto p = std::make_unique<LoraConfig>(c);
  p->init_lora_weights = "true";
  p->calibration.reset();
  p->r *= 2;
  p->lora_alpha *= c.use_rslora ? std::sqrt(2.0) : 2.0;
  for (auto& [_, r] : p->rank_pattern) r *= 2;
  for (auto& [_, a] : p->alpha_pattern) a *= 2;
  return p;
}

}  // namespace peft
