// BEFT's adapter_config.json: HF PEFT 0.21's BeftConfig fields.
#include "peft/beft.h"
#include "tuners/config_fields.h"
#include "tuners/registry.h"

namespace peft {

namespace {

const ojson& beft_defaults() {
  static const auto j = ojson::parse(R"({
    "auto_mapping": null, "base_model_name_or_path": null, "inference_mode": true, "init_weights": true,
    "modules_to_save": null, "peft_type": "BEFT", "peft_version": "0.21.2", "revision": null,
    "target_modules": null, "task_type": null
  })");
  return j;
}

}  // namespace

BeftConfig BeftConfig::from_json(const ojson& j, const std::string& where, std::vector<std::string>* unknown) {
  BeftConfig c;
  ConfigFields f(j, beft_defaults(), "BEFT", where, unknown, c);
  c.init_weights = f.get<bool>("init_weights");
  return c;
}

ojson BeftConfig::to_json() const {
  ojson fields;
  fields["init_weights"] = init_weights;
  return config_json(*this, beft_defaults(), fields);
}

namespace {
[[maybe_unused]] const bool kBeftRegistered = register_method<BeftConfig>("BEFT");
}  // namespace

}  // namespace peft
