// Where HRA goes (HF PEFT's HRAModel): Linear targets, one HRALayer each, HF's inits.
#include <ATen/ATen.h>

#include <cmath>

#include "peft/hra.h"
#include "tuners/config_fields.h"
#include "tuners/init_draws.h"
#include "tuners/injection.h"
#include "tuners/target_match.h"

namespace peft {

void HRAConfig::resolve(const Model& model) {
  if (targets.empty()) targets.target_list = default_targets(model, "HRA", lora_default_targets());
}

NamedModules HRAConfig::layer_targets(Model& model) const { return find_targets(model, targets, task_type); }

std::shared_ptr<LayerAdapter> HRAConfig::make_layer_adapter(const std::string& path, Module& m,
                                                           at::Generator& gen) const {
  auto* host = &linear_host("HRA", path, m);
  auto a = std::make_shared<HRALayer>(host, r, apply_GS);
  const int64_t in = host->input_dim();
  if (init_weights && r % 2 == 0)
    a->u = kaiming_uniform_sqrt5(in, r / 2, gen).repeat_interleave(2, 1);  // reflections cancel in pairs
  else
    a->u = kaiming_uniform_sqrt5(in, r, gen);  // HF warns for odd r: no identity start
  a->to(host->weight_tensor()->device());
  return a;
}

std::vector<std::string> HRAConfig::trained_base_parameters(Model& model, const std::set<std::string>& adapted) const {
  return bias_parameters(model, bias, ".hra_", adapted);
}

}  // namespace peft
