#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include "tuners/registry.h"
#include "peft/layers.h"
#include "peft/ssf.h"
#include "tuners/config_fields.h"
#include "tuners/target_match.h"

namespace peft {

namespace {
const ojson& ssf_defaults() {
  static const auto j = ojson::parse(R"({
    "base_model_name_or_path": null, "exclude_modules": null, "inference_mode": true, "init_weights": true,
    "layers_pattern": null, "layers_to_transform": null, "modules_to_save": null, "peft_type": "SSF",
    "target_modules": null, "task_type": null
  })");
  return j;
}
}  // namespace

SSFConfig SSFConfig::from_json(const ojson& j, const std::string& where, std::vector<std::string>* unknown) {
  SSFConfig c;
  ConfigFields f(j, ssf_defaults(), "SSF", where, unknown, c);
  c.init_weights = f.get<bool>("init_weights");
  return c;
}

ojson SSFConfig::to_json() const {
  ojson fields;
  fields["init_weights"] = init_weights;
  return config_json(*this, ssf_defaults(), fields);
}

NamedModules SSFConfig::layer_targets(Model& model) const {
  if (!targets.empty()) return find_targets(model, targets, task_type);
  // Default: "all-linear" (HF's rule, head excluded) plus every norm, with the config's
  // exclusions and modules_to_save still applied.
  TargetSpec spec = targets;
  spec.target_regex = "all-linear";
  std::vector<std::string> names;
  for (const auto& [name, m] : find_targets(model, spec, task_type)) names.push_back(name);
  for (const auto& [name, m] : model.named_modules())
    if (auto* l = dynamic_cast<AdaptableLayer*>(m); l && l->kind() == LayerKind::kNorm) names.push_back(name);
  spec.target_regex.reset();
  spec.target_list = names;
  return find_targets(model, spec, task_type);
}

std::shared_ptr<LayerAdapter> SSFConfig::make_layer_adapter(const std::string& path, Module& m,
                                                           at::Generator& gen) const {
  auto* host = dynamic_cast<AdaptableLayer*>(&m);
  auto a = std::make_shared<SSFLayer>(host, path);
  if (!init_weights) {
    a->ssf_scale = 1 + 0.02 * at::randn(a->ssf_scale.sizes(), gen, at::TensorOptions(at::kFloat));
    a->ssf_shift = 0.02 * at::randn(a->ssf_shift.sizes(), gen, at::TensorOptions(at::kFloat));
  }
  const auto device = host->device();
  a->ssf_scale = a->ssf_scale.to(device);
  a->ssf_shift = a->ssf_shift.to(device);
  return a;
}


namespace {
[[maybe_unused]] const bool kSSFRegistered = register_method<SSFConfig>("SSF");
}  // namespace

}  // namespace peft
