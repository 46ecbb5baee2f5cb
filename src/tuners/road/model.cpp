// Where RoAd goes (HF PEFT's RoadModel): Linear targets whose output features the group
// size divides, LoRA's default table, HF's inits.
#include <ATen/ATen.h>

#include <stdexcept>

#include "peft/road.h"
#include "tuners/config_fields.h"
#include "tuners/injection.h"
#include "tuners/target_match.h"

namespace peft {

void RoadConfig::resolve(const Model& model) {
  if (targets.empty()) targets.target_list = default_targets(model, "ROAD", lora_default_targets());
}

NamedModules RoadConfig::layer_targets(Model& model) const { return find_targets(model, targets, task_type); }

std::shared_ptr<LayerAdapter> RoadConfig::make_layer_adapter(const std::string& path, Module& m,
                                                            at::Generator& gen) const {
  auto* host = &linear_host("ROAD", path, m);
  if (host->output_dim() % group_size != 0)
    throw std::invalid_argument("ROAD: '" + path + "' has " + std::to_string(host->output_dim()) +
                                " output features, not a multiple of group_size " + std::to_string(group_size));
  auto a = std::make_shared<RoadLayer>(host, variant, group_size);
  const auto opts = at::TensorOptions(at::kFloat);
  if (init_weights) {
    a->theta = at::zeros(a->theta.sizes(), opts);
    a->alpha = at::ones(a->alpha.sizes(), opts);
  } else {  // HF: normal_(θ, 0, 0.5), then normal_(α, 1, 0.5)
    a->theta = at::empty(a->theta.sizes(), opts).normal_(0.0, 0.5, gen);
    a->alpha = at::empty(a->alpha.sizes(), opts).normal_(1.0, 0.5, gen);
  }
  a->to(host->weight_tensor()->device());
  return a;
}

}  // namespace peft
