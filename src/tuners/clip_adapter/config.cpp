#include <ATen/ATen.h>

#include <cmath>

#include "peft/clip_adapter.h"
#include "peft/layers.h"
#include "tuners/config_fields.h"
#include "tuners/registry.h"
#include "tuners/target_match.h"

namespace peft {

namespace {
const ojson& clip_adapter_defaults() {
  static const auto j = ojson::parse(R"({
    "alpha": 0.2, "base_model_name_or_path": null, "exclude_modules": null, "inference_mode": true,
    "layers_pattern": null, "layers_to_transform": null, "modules_to_save": null, "peft_type": "CLIP_ADAPTER",
    "reduction": 4, "target_modules": null, "task_type": null
  })");
  return j;
}
}  // namespace

ClipAdapterConfig ClipAdapterConfig::from_json(const ojson& j, const std::string& where,
                                               std::vector<std::string>* unknown) {
  ClipAdapterConfig c;
  ConfigFields f(j, clip_adapter_defaults(), "CLIP_ADAPTER", where, unknown, c);
  c.alpha = f.get<double>("alpha");
  c.reduction = f.get<int64_t>("reduction");
  if (!std::isfinite(c.alpha) || c.alpha < 0 || c.alpha > 1) f.fail("'alpha' must lie in [0, 1]");
  if (c.reduction < 1) f.fail("'reduction' must be >= 1");
  return c;
}

ojson ClipAdapterConfig::to_json() const {
  ojson fields;
  fields["alpha"] = alpha;
  fields["reduction"] = reduction;
  return config_json(*this, clip_adapter_defaults(), fields);
}

NamedModules ClipAdapterConfig::layer_targets(Model& model) const {
  if (!targets.empty()) return find_targets(model, targets, task_type);
  TargetSpec spec = targets;
  spec.target_list = std::vector<std::string>{"visual_projection"};
  return find_targets(model, spec, task_type);
}

std::shared_ptr<LayerAdapter> ClipAdapterConfig::make_layer_adapter(const std::string& path, Module& m,
                                                                   at::Generator& gen) const {
  auto* host = dynamic_cast<AdaptableLayer*>(&m);
  if (!host || host->kind() != LayerKind::kLinear || host->input_dim() <= 0)
    throw std::invalid_argument("CLIP_ADAPTER targets Linear layers (visual_projection, text_projection); '" + path +
                                "' is a " + m.type_name());
  const int64_t d = host->output_dim();
  const int64_t hidden = std::max<int64_t>(1, d / reduction);
  auto a = std::make_shared<ClipAdapterLayer>(host, hidden, alpha);
  // nn.Linear's default init (kaiming_uniform with a = sqrt(5): U(-1/sqrt(in), 1/sqrt(in))),
  // as the paper's nn.Linear layers start.
  auto uniform = [&](at::Tensor& t, int64_t fan_in) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
    t = at::empty(t.sizes(), at::kFloat).uniform_(-bound, bound, gen);
  };
  uniform(a->clip_adapter_down, d);
  uniform(a->clip_adapter_up, hidden);
  a->clip_adapter_down = a->clip_adapter_down.to(host->device());
  a->clip_adapter_up = a->clip_adapter_up.to(host->device());
  return a;
}

namespace {
[[maybe_unused]] const bool kClipAdapterRegistered = register_method<ClipAdapterConfig>("CLIP_ADAPTER");
}  // namespace

}  // namespace peft
