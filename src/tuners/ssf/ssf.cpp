#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

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
  TargetSpec spec = targets;
  std::vector<std::string> names;
  for (const auto& [name, m] : find_targets(model, [&] {
         TargetSpec all = targets;
         all.target_regex = "all-linear";
         return all;
       }(), task_type))
    names.push_back(name);
  for (const auto& [name, m] : model.named_modules())
    if (dynamic_cast<LayerNorm*>(m) || dynamic_cast<RMSNorm*>(m)) names.push_back(name);
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
  const auto device = host->named_parameters().front().second.device();
  a->ssf_scale = a->ssf_scale.to(device);
  a->ssf_shift = a->ssf_shift.to(device);
  return a;
}

SSFLayer::SSFLayer(AdaptableLayer* host, std::string path) : LayerAdapter(host), path_(std::move(path)) {
  const int64_t d = host->output_dim();
  ssf_scale = at::ones({d}, at::kFloat);
  ssf_shift = at::zeros({d}, at::kFloat);
  register_parameter("ssf_scale", &ssf_scale, {d});
  register_parameter("ssf_shift", &ssf_shift, {d});
}

at::Tensor SSFLayer::forward(const at::Tensor&, const at::Tensor& out) {
  return out * ssf_scale.to(out.scalar_type()) + ssf_shift.to(out.scalar_type());
}

void SSFLayer::fold(bool undo) {
  c10::NoGradGuard g;
  at::Tensor *w = nullptr, *b = nullptr;
  at::Tensor scale_w = ssf_scale;  // the scale shaped for the weight
  if (auto* l = dynamic_cast<Linear*>(host_)) w = &l->weight, b = &l->bias, scale_w = ssf_scale.unsqueeze(1);
  else if (auto* c = dynamic_cast<Conv1D*>(host_)) w = &c->weight, b = &c->bias, scale_w = ssf_scale.unsqueeze(0);
  else if (auto* n = dynamic_cast<LayerNorm*>(host_)) w = &n->weight, b = &n->bias;
  else if (auto* r = dynamic_cast<RMSNorm*>(host_)) w = &r->weight;
  else if (auto* e = dynamic_cast<Embedding*>(host_)) w = &e->weight, scale_w = ssf_scale.unsqueeze(0);
  else throw std::logic_error("SSF on '" + path_ + "' (" + host_->type_name() + ") cannot be merged");
  const bool embedding = dynamic_cast<Embedding*>(host_) != nullptr;
  const bool has_bias = b && b->defined();
  if (!has_bias && !embedding && ssf_shift.abs().max().item<double>() != 0.0)
    throw std::logic_error("SSF shift on '" + path_ + "' cannot be merged: the " + host_->type_name() +
                           " has no bias");
  auto sw = scale_w.to(w->scalar_type());
  if (!undo) {
    w->mul_(sw);
    if (embedding) w->add_(ssf_shift.to(w->scalar_type()));
    if (has_bias) b->mul_(ssf_scale.to(b->scalar_type())).add_(ssf_shift.to(b->scalar_type()));
  } else {
    if (embedding) w->sub_(ssf_shift.to(w->scalar_type()));
    w->div_(sw);
    if (has_bias) b->sub_(ssf_shift.to(b->scalar_type())).div_(ssf_scale.to(b->scalar_type()));
  }
}

void SSFLayer::merge() {
  if (merged_) return;
  fold(false);
  merged_ = true;
}

void SSFLayer::unmerge() {
  if (!merged_) return;
  fold(true);
  merged_ = false;
}

}  // namespace peft
