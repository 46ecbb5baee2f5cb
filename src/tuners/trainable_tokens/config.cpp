// TRAINABLE_TOKENS' adapter_config.json: HF PEFT 0.21's TrainableTokensConfig fields.
#include "peft/trainable_tokens.h"
#include "tuners/config_fields.h"
#include "tuners/registry.h"
#include "tuners/trainable_tokens/plan.h"

namespace peft {

namespace {

const ojson& trainable_tokens_defaults() {
  static const auto j = ojson::parse(R"({
    "auto_mapping": null, "base_model_name_or_path": null, "inference_mode": true, "init_weights": true,
    "peft_type": "TRAINABLE_TOKENS", "peft_version": "0.21.2", "revision": null, "target_modules": null,
    "task_type": null, "token_indices": []
  })");
  return j;
}

}  // namespace

TrainableTokensConfig TrainableTokensConfig::from_json(const ojson& j, const std::string& where,
                                                       std::vector<std::string>* unknown) {
  TrainableTokensConfig c;
  ConfigFields f(j, trainable_tokens_defaults(), "TRAINABLE_TOKENS", where, unknown, c);
  try {
    c.token_indices = read_token_list(f.value("token_indices"), "'token_indices'");
  } catch (const std::invalid_argument& e) {
    f.fail(e.what());
  }
  c.init_weights = f.get<bool>("init_weights");
  return c;
}

ojson TrainableTokensConfig::to_json() const {
  ojson fields;
  fields["token_indices"] = token_indices;
  fields["init_weights"] = init_weights;
  ojson j = config_json(*this, trainable_tokens_defaults(), fields);
  j.erase("modules_to_save");  // not a field of HF's TrainableTokensConfig
  return j;
}

namespace {
[[maybe_unused]] const bool kTrainableTokensRegistered = register_method<TrainableTokensConfig>("TRAINABLE_TOKENS");
}  // namespace

}  // namespace peft
