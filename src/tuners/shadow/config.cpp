// SHADOW's adapter_config.json: HF PEFT 0.21's ShadowConfig fields.
#include <cmath>

#include "peft/shadow.h"
#include "tuners/config_fields.h"
#include "tuners/registry.h"
#include "tuners/shadow/shadow_blocks.h"

namespace peft {

namespace {

const ojson& shadow_defaults() {
  static const auto j = ojson::parse(R"({
    "auto_mapping": null, "auxiliary_loss_weight": 0.05, "base_model_name_or_path": null,
    "exclude_modules": null, "inference_mode": true, "init_weights": true, "layers_pattern": null,
    "layers_to_transform": null, "modules_to_save": null, "peft_type": "SHADOW", "peft_version": "0.21.2",
    "r": 8, "revision": null, "shadow_alpha": 0.1, "shadow_dropout": 0.2, "shadow_hidden_size": null,
    "shadow_intermediate_size": null, "shadow_model": "mirror", "shadow_num_attention_heads": null,
    "shadow_num_hidden_layers": null, "share_embeddings": true, "target_modules": null, "task_type": null,
    "update_hidden_size": null
  })");
  return j;
}

std::optional<int64_t> optional_size(const ConfigFields& f, const char* key) {
  if (f.is_null(key)) return std::nullopt;
  const auto v = f.get<int64_t>(key);
  if (v <= 0) f.fail(std::string("'") + key + "' must be a positive integer or null, got " + std::to_string(v));
  return v;
}

ojson optional_json(const std::optional<int64_t>& v) { return v ? ojson(*v) : ojson(); }

}  // namespace

ShadowConfig ShadowConfig::from_json(const ojson& j, const std::string& where, std::vector<std::string>* unknown) {
  ShadowConfig c;
  ConfigFields f(j, shadow_defaults(), "SHADOW", where, unknown, c);
  c.r = f.get<int64_t>("r");
  c.shadow_alpha = f.get<double>("shadow_alpha");
  c.shadow_dropout = f.get<double>("shadow_dropout");
  c.init_weights = f.get<bool>("init_weights");
  c.shadow_model = f.get<std::string>("shadow_model");
  c.shadow_num_hidden_layers = optional_size(f, "shadow_num_hidden_layers");
  c.shadow_hidden_size = optional_size(f, "shadow_hidden_size");
  c.shadow_num_attention_heads = optional_size(f, "shadow_num_attention_heads");
  c.shadow_intermediate_size = optional_size(f, "shadow_intermediate_size");
  c.share_embeddings = f.get<bool>("share_embeddings");
  c.update_hidden_size = optional_size(f, "update_hidden_size");
  c.auxiliary_loss_weight = f.get<double>("auxiliary_loss_weight");
  // HF's messages where HF refuses too.
  if (c.r <= 0) f.fail("'r' must be a positive integer, got " + std::to_string(c.r));
  if (!std::isfinite(c.shadow_alpha)) f.fail("'shadow_alpha' must be finite");
  if (!(c.shadow_dropout >= 0.0 && c.shadow_dropout < 1.0))
    f.fail("'shadow_dropout' must be in [0, 1), got " + std::to_string(c.shadow_dropout));
  if (!(std::isfinite(c.auxiliary_loss_weight) && c.auxiliary_loss_weight >= 0.0))
    f.fail("'auxiliary_loss_weight' must be a finite number >= 0");
  if (c.targets.target_regex && !c.targets.layers_to_transform.empty())
    f.fail("'layers_to_transform' cannot be used when 'target_modules' is a str");
  if (c.targets.target_regex && !c.targets.layers_pattern.empty())
    f.fail("'layers_pattern' cannot be used when 'target_modules' is a str");
  if (!c.targets.layers_pattern.empty() && c.targets.layers_to_transform.empty())
    f.fail("'layers_pattern' needs 'layers_to_transform'");
  if (c.shadow_model != "mirror") {
    std::string set;
    for (const char* k : {"shadow_num_hidden_layers", "shadow_hidden_size", "shadow_num_attention_heads",
                          "shadow_intermediate_size"})
      if (!f.is_null(k)) set += (set.empty() ? "" : ", ") + std::string(k);
    if (!set.empty())
      f.fail("explicit 'shadow_model' checkpoints define their architecture; unset these mirror-only overrides: " + set);
    // HF loads a pretrained backbone (AutoModel or a "causal_lm_with_hidden_projection"
    // checkpoint) from the Hub or a folder; we build mirrors only.
    f.fail("'shadow_model' '" + c.shadow_model +
           "': pretrained shadow backbones are not supported, only \"mirror\" (a fresh backbone of the base's class)");
  }
  if (c.task_type == "SEQ_CLS" || c.task_type == "TOKEN_CLS")
    f.fail("task_type " + c.task_type + " is not supported (causal LMs only: its shadow head is the base lm_head)");
  return c;
}

ojson ShadowConfig::to_json() const {
  ojson fields;
  fields["r"] = r;
  fields["shadow_alpha"] = shadow_alpha;
  fields["shadow_dropout"] = shadow_dropout;
  fields["init_weights"] = init_weights;
  fields["shadow_model"] = shadow_model;
  fields["shadow_num_hidden_layers"] = optional_json(shadow_num_hidden_layers);
  fields["shadow_hidden_size"] = optional_json(shadow_hidden_size);
  fields["shadow_num_attention_heads"] = optional_json(shadow_num_attention_heads);
  fields["shadow_intermediate_size"] = optional_json(shadow_intermediate_size);
  fields["share_embeddings"] = share_embeddings;
  fields["update_hidden_size"] = optional_json(update_hidden_size);
  fields["auxiliary_loss_weight"] = auxiliary_loss_weight;
  return config_json(*this, shadow_defaults(), fields);
}

void ShadowConfig::resolve(const Model& model) {
  auto& m = const_cast<Model&>(model);
  const auto blocks = shadow::decoder_blocks(m);  // refuses unsupported bases by name
  if (targets.empty()) {
    std::vector<std::string> names;
    for (const auto& b : blocks) names.push_back(b.path);
    targets.target_list = names;
  }
}

std::shared_ptr<InputAdapter> ShadowConfig::make_input_adapter(Model& model, at::Generator& gen) const {
  return std::make_shared<ShadowAdapter>(model, *this, gen);
}

namespace {
[[maybe_unused]] const bool kShadowRegistered = register_method<ShadowConfig>("SHADOW");
}  // namespace

}  // namespace peft
