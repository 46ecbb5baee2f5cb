// Where PEANuT goes (HF PEFT's PeanutModel): nn.Linear targets only (HF refuses GPT-2's
// Conv1D, "PEANuT does not support target modules of type Conv1D", and so do we), LoRA's
// default table, HF's inits.
#include <ATen/ATen.h>

#include "peft/peanut.h"
#include "tuners/config_fields.h"
#include "tuners/init_draws.h"
#include "tuners/injection.h"
#include "tuners/target_match.h"

namespace peft {

void PeanutConfig::resolve(const Model& model) {
  if (targets.empty()) targets.target_list = default_targets(model, "PEANUT", lora_default_targets());
}

NamedModules PeanutConfig::layer_targets(Model& model) const { return find_targets(model, targets, task_type); }

std::shared_ptr<LayerAdapter> PeanutConfig::make_layer_adapter(const std::string& path, Module& m,
                                                              at::Generator& gen) const {
  auto* host = &linear_host("PEANUT", path, m, LinearHost::kLinear);
  auto a = std::make_shared<PeanutLayer>(host, r, depth, act_fn, scaling);
  const int64_t out = host->output_dim();
  // HF's reset_peanut_parameters draws in this order: A, the encoders, the decoders, B.
  a->A = kaiming_uniform_sqrt5(r, out, gen);
  for (auto& e : a->encoders) e = kaiming_uniform_sqrt5(r, r, gen);
  for (auto& d : a->decoders) d = kaiming_uniform_sqrt5(r, r, gen);
  if (!init_weights) a->B = kaiming_uniform_sqrt5(out, r, gen);
  a->to(host->weight_tensor()->device());
  return a;
}

}  // namespace peft
