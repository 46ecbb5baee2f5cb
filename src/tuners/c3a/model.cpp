// Where C3A goes (HF PEFT's C3AModel): Linear targets, each layer's block size
// (block_size_pattern), one C3ALayer each with HF's inits.
#include <ATen/ATen.h>

#include <cmath>
#include <stdexcept>

#include "peft/c3a.h"
#include "tuners/config_fields.h"
#include "tuners/injection.h"
#include "tuners/target_match.h"
#include "util/regex.h"

namespace peft {

void C3AConfig::resolve(const Model& model) {
  if (targets.empty())
    targets.target_list =
        default_targets(model, "C3A", lora_default_targets({{"gpt_bigcode", {"mlp.c_proj"}}, {"gpt2", {"mlp.c_proj"}}}));
}

NamedModules C3AConfig::layer_targets(Model& model) const { return find_targets(model, targets, task_type); }

int64_t C3AConfig::block_size_for(const std::string& path) const {
  // HF: the first key (file order) with re.match(".*\.key$", name), else the name itself.
  for (const auto& [k, b] : block_size_pattern)
    if (Regex(".*\\." + k).full_match(path)) return b;
  for (const auto& [k, b] : block_size_pattern)
    if (k == path) return b;
  return block_size;
}

std::shared_ptr<LayerAdapter> C3AConfig::make_layer_adapter(const std::string& path, Module& m,
                                                           at::Generator& gen) const {
  auto* host = &linear_host("C3A", path, m);
  const int64_t b = block_size_for(path), in = host->input_dim(), out = host->output_dim();
  if (b <= 0) throw std::invalid_argument("C3A: block_size " + std::to_string(b) + " of '" + path + "' must be positive");
  if (in % b != 0 || out % b != 0)
    throw std::invalid_argument("C3A: block_size " + std::to_string(b) + " must divide in_features (" +
                                std::to_string(in) + ") and out_features (" + std::to_string(out) + ") of '" + path +
                                "'");
  auto a = std::make_shared<C3ALayer>(host, b);
  auto& k = a->kernel;
  if (init_weights == "gaussian") {
    k.normal_(0.0, 1.0, gen);
  } else if (init_weights == "xavier_uniform" || init_weights == "false") {
    const double bound = std::sqrt(3.0) * std::sqrt(2.0 / static_cast<double>(in + out));
    k.uniform_(-bound, bound, gen);
  } else if (init_weights == "kaiming_uniform") {
    const double bound = std::sqrt(1.0 / static_cast<double>(in));
    k.uniform_(-bound, bound, gen);
  }  // "true": zeros
  a->to(host->weight_tensor()->device());
  return a;
}

std::vector<std::string> C3AConfig::trained_base_parameters(Model& model, const std::set<std::string>& adapted) const {
  return bias_parameters(model, bias, ".c3a_", adapted);
}

}  // namespace peft
