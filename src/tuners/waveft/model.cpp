// Where WaveFT goes (HF PEFT 0.21's WaveFTModel): Linear and GPT-2 Conv1D targets, HF's
// default-target table, each layer's n_frequency (proportional share, pattern or global).
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "peft/layers.h"
#include "peft/waveft.h"
#include "tuners/config_fields.h"
#include "tuners/injection.h"
#include "tuners/pattern_key.h"
#include "tuners/target_match.h"

namespace peft {

void WaveftConfig::resolve(const Model& model) {
  if (!targets.empty()) return;
  // HF's TRANSFORMERS_MODELS_TO_WAVEFT_TARGET_MODULES_MAPPING: LoRA's table with GPT-2 /
  // GPT-BigCode on mlp.c_proj and no btlm, rwkv or rwkv7 entry.
  auto table = lora_default_targets({{"gpt_bigcode", {"mlp.c_proj"}}, {"gpt2", {"mlp.c_proj"}}});
  std::erase_if(table, [](const auto& e) { return e.first == "btlm" || e.first == "rwkv" || e.first == "rwkv7"; });
  targets.target_list = default_targets(model, "WAVEFT", table);
}

// HF's _calculate_proportional_parameters: a budget of n_frequency per target, shared in
// proportion to in · out, each share rounded half to even (Python's round), at least 1.
NamedModules WaveftConfig::layer_targets(Model& model) const {
  auto found = find_targets(model, targets, task_type);
  proportional_.clear();
  if (!proportional_parameters) return found;
  if (found.empty()) throw std::invalid_argument("WAVEFT: no target modules found for proportional_parameters");
  std::vector<std::pair<std::string, int64_t>> sizes;
  int64_t total = 0;
  for (const auto& [path, m] : found) {
    auto& host = linear_host("WAVEFT", path, *m, LinearHost::kLinearOrConv1D);
    sizes.emplace_back(path, host.input_dim() * host.output_dim());
    total += sizes.back().second;
  }
  const int64_t budget = n_frequency * static_cast<int64_t>(found.size());
  for (const auto& [path, size] : sizes) {
    const double ratio = static_cast<double>(size) / static_cast<double>(total);
    const auto share = static_cast<int64_t>(std::nearbyint(ratio * static_cast<double>(budget)));
    proportional_[path] = std::max<int64_t>(1, share);
  }
  return found;
}

int64_t WaveftConfig::n_frequency_for(const std::string& path) const {
  if (auto it = proportional_.find(path); it != proportional_.end()) return it->second;
  if (const auto* n = pattern_value(n_frequency_pattern, path)) return *n;
  return n_frequency;
}

std::shared_ptr<LayerAdapter> WaveftConfig::make_layer_adapter(const std::string& path, Module& m,
                                                              at::Generator& gen) const {
  auto* host = &linear_host("WAVEFT", path, m, LinearHost::kLinearOrConv1D);
  const int64_t n = n_frequency_for(path), size = host->input_dim() * host->output_dim();
  if (n > size)
    throw std::invalid_argument("WAVEFT: n_frequency " + std::to_string(n) + " of '" + path + "' exceeds its " +
                                std::to_string(size) + " weights (in_features * out_features)");
  auto a = std::make_shared<WaveftLayer>(host, n, *this);
  if (!init_weights) {  // HF: torch.randn(n) * 0.01
    c10::NoGradGuard g;
    a->spectrum = at::randn({n}, gen, at::TensorOptions(at::kFloat)) * 0.01;
  }
  a->to(host->weight_tensor()->device());
  return a;
}

std::vector<std::string> WaveftConfig::trained_base_parameters(Model& model,
                                                               const std::set<std::string>& adapted) const {
  return bias_parameters(model, bias, ".waveft_", adapted);
}

}  // namespace peft
