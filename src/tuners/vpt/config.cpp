// Visual prompt tuning: config and injection.
#include <ATen/ATen.h>

#include <cmath>

#include "tuners/registry.h"
#include "peft/clip.h"
#include "peft/prompt.h"
#include "tuners/vpt/layer.h"

namespace peft {

namespace {

// Our fields (HF PEFT has no VPT), in its style.
const ojson& vpt_defaults() {
  static const auto j = ojson::parse(R"({
    "base_model_name_or_path": null, "deep": false, "inference_mode": true, "modules_to_save": null,
    "num_virtual_tokens": 10, "peft_type": "VPT", "task_type": null
  })");
  return j;
}

}  // namespace

VPTConfig VPTConfig::from_json(const ojson& j, const std::string& where, std::vector<std::string>* unknown) {
  VPTConfig c;
  ConfigFields f(j, vpt_defaults(), "VPT", where, unknown, c);
  c.num_virtual_tokens = f.get<int64_t>("num_virtual_tokens");
  c.deep = f.get<bool>("deep");
  if (c.num_virtual_tokens <= 0) f.fail("'num_virtual_tokens' must be positive");
  return c;
}

ojson VPTConfig::to_json() const {
  ojson fields;
  fields["num_virtual_tokens"] = num_virtual_tokens;
  fields["deep"] = deep;
  return config_json(*this, vpt_defaults(), fields);
}

void VPTConfig::resolve(const Model& model) {
  if (model.task() == TaskKind::kImageClassification && targets.modules_to_save.empty())
    targets.modules_to_save = {"classifier"};
}

std::shared_ptr<InputAdapter> VPTConfig::make_input_adapter(Model& model, at::Generator& gen) const {
  // CLIPModel: the prompts go into its vision tower, sized by vision_config (whose
  // defaults are CLIPVisionConfig's: patch 32).
  const bool clip = as_contrastive(model) != nullptr;
  if (model.input_kind() != InputKind::kPixels && !clip)
    throw std::invalid_argument("VPT: visual prompt tuning needs an image model (ViT, CLIP), not " + model.type_name());
  const auto& c = clip ? model.config().at("vision_config") : model.config();
  const int64_t hidden = c.value("hidden_size", int64_t{768}), layers = c.value("num_hidden_layers", int64_t{12});
  const int64_t patch = c.value("patch_size", clip ? int64_t{32} : int64_t{16});
  auto a = std::make_shared<VisualPrompts>(layers, num_virtual_tokens, hidden, deep);
  const double v = std::sqrt(6.0 / static_cast<double>(3 * patch * patch + hidden));
  a->vpt_prompts = at::rand(a->vpt_prompts.sizes(), gen, at::TensorOptions(at::kFloat)) * (2 * v) - v;
  a->to(device_of(model));
  return a;
}


namespace {
[[maybe_unused]] const bool kVPTRegistered = register_method<VPTConfig>("VPT");
}  // namespace

}  // namespace peft
