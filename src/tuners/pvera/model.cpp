// Where PVeRA goes and what it shares (HF PEFT's PveraModel): VeRA's targets and
// projection code (pvera_A with 2r rows: a mean and a log-variance half), one PveraLayer each.
#include <ATen/ATen.h>

#include "peft/layers.h"
#include "peft/pvera.h"
#include "tuners/config_fields.h"
#include "tuners/injection.h"
#include "tuners/target_match.h"
#include "tuners/vera/projection.h"

namespace peft {

void PveraConfig::resolve(const Model& model) {
  // HF: TRANSFORMERS_MODELS_TO_PVERA_TARGET_MODULES_MAPPING, VeRA's table plus dinov2.
  if (targets.empty())
    targets.target_list = default_targets(
        model, "PVERA", lora_default_targets({{"phi", {"q_proj", "v_proj"}}, {"dinov2", {"query", "value"}}}));
}

NamedModules PveraConfig::layer_targets(Model& model) const {
  auto found = find_targets(model, targets, task_type);
  projection_ = projection_for_targets("PVERA", found, 2 * r, r, projection_prng_key, save_projection, model.device());
  return found;
}

std::shared_ptr<LayerAdapter> PveraConfig::make_layer_adapter(const std::string& path, Module& m,
                                                             at::Generator& gen) const {
  auto* host = &linear_host("PVERA", path, m, LinearHost::kLinearOrConv1D);
  if (!projection_ || projection_->A.size(1) < host->input_dim() || projection_->B.size(0) < host->output_dim())
    throw std::logic_error("PVERA: the projection is not sized for '" + path + "' (layer_targets makes it)");
  auto a = std::make_shared<PveraLayer>(host, projection_, r, pvera_dropout, sample_at_inference, generator_seed);
  if (init_weights) {
    a->lambda_d.fill_(d_initial);  // both halves; lambda_b stays 0: the adapted model starts as the base
  } else {
    a->lambda_d = at::randn({2 * r}, gen, at::TensorOptions(at::kFloat));
    a->lambda_b.fill_(1.0);
  }
  a->to(host->weight_tensor()->device());
  return a;
}

std::vector<std::string> PveraConfig::trained_base_parameters(Model& model, const std::set<std::string>& adapted) const {
  return bias_parameters(model, bias, ".pvera_lambda_", adapted);
}

}  // namespace peft
