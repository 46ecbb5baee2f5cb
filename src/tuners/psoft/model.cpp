// Where PSOFT goes (HF PEFT 0.21's PsoftModel): nn.Linear targets (HF refuses others), LoRA's
// table of default targets, r no larger than the layer's smaller dimension.
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <stdexcept>

#include "peft/psoft.h"
#include "tuners/config_fields.h"
#include "tuners/injection.h"
#include "tuners/target_match.h"

namespace peft {

void PsoftConfig::resolve(const Model& model) {
  if (targets.empty()) targets.target_list = default_targets(model, "PSOFT", lora_default_targets());
}

NamedModules PsoftConfig::layer_targets(Model& model) const { return find_targets(model, targets, task_type); }

std::shared_ptr<LayerAdapter> PsoftConfig::make_layer_adapter(const std::string& path, Module& m,
                                                             at::Generator& gen) const {
  auto* host = &linear_host("PSOFT", path, m, LinearHost::kLinear);
  const int64_t in = host->input_dim(), out = host->output_dim();
  if (r > std::min(in, out))
    throw std::invalid_argument("PSOFT: 'r' (" + std::to_string(r) + ") of '" + path +
                                "' must be at most min(in_features, out_features) (" + std::to_string(in) + ", " +
                                std::to_string(out) + ")");
  auto a = std::make_shared<PsoftLayer>(host, *this);
  if (!init_weights) {  // HF's reset_parameters(init_weights=False); the vectors stay ones
    c10::NoGradGuard g;
    const auto f32 = at::TensorOptions(at::kFloat);
    if (psoft_orth)
      a->weight = at::empty({a->weight.size(0)}, f32).normal_(0, 0.1, gen);
    else
      a->weight = at::eye(r, f32) + at::randn({r, r}, gen, f32) * 0.1;
    a->to(host->weight_tensor()->device());
  }
  return a;
}

}  // namespace peft
