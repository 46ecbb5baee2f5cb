// Where DEFT goes (HF PEFT's DeftModel): Linear and Conv1D targets, LoRA's default table,
// the rank capped at the output features, HF's inits (R from the frozen weight).
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <algorithm>

#include "peft/deft.h"
#include "tuners/config_fields.h"
#include "tuners/injection.h"
#include "tuners/target_match.h"

namespace peft {

void DeftConfig::resolve(const Model& model) {
  if (targets.empty()) targets.target_list = default_targets(model, "DEFT", lora_default_targets());
}

NamedModules DeftConfig::layer_targets(Model& model) const { return find_targets(model, targets, task_type); }

std::shared_ptr<LayerAdapter> DeftConfig::make_layer_adapter(const std::string& path, Module& m,
                                                            at::Generator& gen) const {
  auto* host = &linear_host("DEFT", path, m, LinearHost::kLinearOrConv1D);
  const int64_t in = host->input_dim(), out = host->output_dim();
  const int64_t rank = std::min(r, out);
  const double s = alpha && *alpha != 0 ? *alpha / static_cast<double>(rank) : 1.0;
  auto a = std::make_shared<DeftLayer>(host, rank, s, decomposition_method == "qr", para, deft_dropout);
  const auto f32 = at::TensorOptions(at::kFloat);
  a->P = at::empty({out, rank}, f32).normal_(0, 0.02, gen);
  if (!para) {
    if (init_weights) {
      c10::NoGradGuard no_grad;  // R = rightᵀ W / s: the adapted weight equals W
      a->R = (a->merge_factor().cpu() / s).contiguous();
    } else {
      a->R = at::empty({rank, in}, f32).normal_(0, 0.02 * init_scale, gen);
    }
  }
  a->to(host->weight_tensor()->device());
  return a;
}

std::vector<std::string> DeftConfig::trained_base_parameters(Model& model, const std::set<std::string>& adapted) const {
  return bias_parameters(model, bias, ".deft_", adapted);
}

}  // namespace peft
