// VB-LoRA's adapter_config.json: HF PEFT 0.21's VBLoRAConfig fields.
#include "peft/vblora.h"
#include "tuners/config_fields.h"
#include "tuners/registry.h"

namespace peft {

namespace {

const ojson& vblora_defaults() {
  static const auto j = ojson::parse(R"({
    "auto_mapping": null, "base_model_name_or_path": null, "bias": "none", "exclude_modules": null,
    "fan_in_fan_out": false, "inference_mode": true, "init_logits_std": 0.1, "init_vector_bank_bound": 0.02,
    "layers_pattern": null, "layers_to_transform": null, "modules_to_save": null, "num_vectors": 256,
    "peft_type": "VBLORA", "peft_version": "0.21.2", "r": 4, "revision": null, "save_only_topk_weights": false,
    "target_modules": null, "task_type": null, "topk": 2, "vblora_dropout": 0.0, "vector_length": 256
  })");
  return j;
}

int64_t positive(const ConfigFields& f, const char* key) {
  const auto v = f.get<int64_t>(key);
  if (v <= 0) f.fail(std::string("'") + key + "' must be positive, got " + std::to_string(v));
  return v;
}

}  // namespace

VBLoRAConfig VBLoRAConfig::from_json(const ojson& j, const std::string& where, std::vector<std::string>* unknown) {
  VBLoRAConfig c;
  ConfigFields f(j, vblora_defaults(), "VBLORA", where, unknown, c);
  c.r = positive(f, "r");
  c.num_vectors = positive(f, "num_vectors");
  c.vector_length = positive(f, "vector_length");
  c.topk = positive(f, "topk");
  if (c.topk > c.num_vectors)
    f.fail("'topk' " + std::to_string(c.topk) + " is more than 'num_vectors' " + std::to_string(c.num_vectors));
  c.save_only_topk_weights = f.get<bool>("save_only_topk_weights");
  c.vblora_dropout = f.get<double>("vblora_dropout");
  if (!(c.vblora_dropout >= 0.0 && c.vblora_dropout < 1.0))
    f.fail("'vblora_dropout' must be in [0, 1), got " + std::to_string(c.vblora_dropout));
  c.fan_in_fan_out = f.get<bool>("fan_in_fan_out");
  c.bias = f.get<std::string>("bias");
  if (c.bias != "none" && c.bias != "all" && c.bias != "vblora_only")
    f.fail("'bias' must be none, all or vblora_only, got '" + c.bias + "'");
  c.init_vector_bank_bound = f.get<double>("init_vector_bank_bound");
  c.init_logits_std = f.get<double>("init_logits_std");
  if (!(c.init_logits_std >= 0.0)) f.fail("'init_logits_std' must not be negative");
  if (!c.targets.layers_pattern.empty() && c.targets.layers_to_transform.empty())
    f.fail("'layers_pattern' needs 'layers_to_transform'");
  return c;
}

ojson VBLoRAConfig::to_json() const {
  ojson fields;
  fields["r"] = r;
  fields["num_vectors"] = num_vectors;
  fields["vector_length"] = vector_length;
  fields["topk"] = topk;
  fields["save_only_topk_weights"] = save_only_topk_weights;
  fields["vblora_dropout"] = vblora_dropout;
  fields["fan_in_fan_out"] = fan_in_fan_out;
  fields["bias"] = bias;
  fields["init_vector_bank_bound"] = init_vector_bank_bound;
  fields["init_logits_std"] = init_logits_std;
  return config_json(*this, vblora_defaults(), fields);
}

namespace {
[[maybe_unused]] const bool kVBLoRARegistered = register_method<VBLoRAConfig>("VBLORA");
}  // namespace

}  // namespace peft
