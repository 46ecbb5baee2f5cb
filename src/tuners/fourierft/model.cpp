// Where FourierFT goes (HF PEFT's FourierFTModel): the targets, each layer's n_frequency
// (n_frequency_pattern), one FourierFTLayer each.
#include <ATen/ATen.h>

#include "peft/fourierft.h"
#include "peft/layers.h"
#include "tuners/config_fields.h"
#include "tuners/injection.h"
#include "tuners/target_match.h"
#include "util/regex.h"

namespace peft {

void FourierFTConfig::resolve(const Model& model) {
  if (targets.empty()) targets.target_list = default_targets(model, "FOURIERFT", lora_default_targets({{"gpt_bigcode", {"mlp.c_proj"}}, {"gpt2", {"mlp.c_proj"}}}));
}

NamedModules FourierFTConfig::layer_targets(Model& model) const { return find_targets(model, targets, task_type); }

int64_t FourierFTConfig::n_frequency_for(const std::string& path) const {
  // HF: the first pattern key (in the file's order; ours sorted) with re.match(".*\.key$").
  for (const auto& [k, n] : n_frequency_pattern)
    if (Regex(".*\\." + k).full_match(path)) return n;
  if (auto it = n_frequency_pattern.find(path); it != n_frequency_pattern.end()) return it->second;
  return n_frequency;
}

std::shared_ptr<LayerAdapter> FourierFTConfig::make_layer_adapter(const std::string& path, Module& m,
                                                                 at::Generator& gen) const {
  auto* host = &linear_host("FOURIERFT", path, m, LinearHost::kLinearOrConv1D);
  const int64_t n = n_frequency_for(path);
  if (n > host->input_dim() * host->output_dim())
    throw std::invalid_argument("FOURIERFT: n_frequency " + std::to_string(n) + " exceeds the " +
                                std::to_string(host->input_dim() * host->output_dim()) + " weights of '" + path + "'");
  auto a = std::make_shared<FourierFTLayer>(host, n, scaling, random_loc_seed);
  if (!init_weights) a->spectrum = at::randn({n}, gen, at::TensorOptions(at::kFloat));
  a->to(host->weight_tensor()->device());
  return a;
}

std::vector<std::string> FourierFTConfig::trained_base_parameters(Model& model,
                                                                  const std::set<std::string>& adapted) const {
  return bias_parameters(model, bias, ".fourierft_", adapted);
}

}  // namespace peft
