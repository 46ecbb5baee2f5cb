// Where BOFT goes (HF PEFT's BOFTModel): Linear targets, each layer's block size and count
// from boft_block_size / boft_block_num (which must divide in_features), one BOFTLayer each.
#include <ATen/ATen.h>

#include <iostream>

#include "peft/boft.h"
#include "tuners/config_fields.h"
#include "tuners/injection.h"
#include "tuners/target_match.h"

namespace peft {

void BOFTConfig::resolve(const Model& model) {
  if (targets.empty()) targets.target_list = default_targets(model, "BOFT", lora_default_targets());
}

NamedModules BOFTConfig::layer_targets(Model& model) const { return find_targets(model, targets, task_type); }

std::shared_ptr<LayerAdapter> BOFTConfig::make_layer_adapter(const std::string& path, Module& m,
                                                            at::Generator& gen) const {
  auto* host = &linear_host("BOFT", path, m);
  if (boft_n_butterfly_factor != 1) {
    static bool warned = false;  // HF warns once per layer; once is enough
    if (!warned)
      std::cerr << "warning: BOFT: boft_n_butterfly_factor " << boft_n_butterfly_factor
                << " needs HF PEFT's CUDA kernel; as HF does without it, one factor is used\n";
    warned = true;
  }
  const int64_t in = host->input_dim();
  const int64_t want = boft_block_size != 0 ? boft_block_size : boft_block_num;
  if (in % want != 0)
    throw std::invalid_argument("BOFT: in_features (" + std::to_string(in) + ") of '" + path +
                                "' must be divisible by " +
                                (boft_block_size != 0 ? "boft_block_size" : "boft_block_num") + " (" +
                                std::to_string(want) + ")");
  const int64_t size = boft_block_size != 0 ? boft_block_size : in / boft_block_num;
  auto a = std::make_shared<BOFTLayer>(host, in / size, size, boft_dropout);
  if (!init_weights) {
    a->R = at::normal(0.0, 0.1, a->R.sizes(), gen, at::TensorOptions(at::kFloat));
    a->s = at::normal(1.0, 0.1, a->s.sizes(), gen, at::TensorOptions(at::kFloat));
  }
  a->to(host->weight_tensor()->device());
  return a;
}

std::vector<std::string> BOFTConfig::trained_base_parameters(Model& model, const std::set<std::string>& adapted) const {
  return bias_parameters(model, bias, ".boft_", adapted);
}

}  // namespace peft
