// BitFit: config and injection (trainable copies of bias vectors).
#include "tuners/registry.h"
#include "peft/bitfit.h"
#include "tuners/config_fields.h"
#include "tuners/target_match.h"

namespace peft {

namespace {

const ojson& bitfit_defaults() {
  static const auto j = ojson::parse(R"({
    "base_model_name_or_path": null, "exclude_modules": null, "inference_mode": true, "modules_to_save": null,
    "peft_type": "BITFIT", "target_modules": null, "task_type": null
  })");
  return j;
}

bool has_bias(Module* m) {
  bool found = false;
  for (const auto& [n, t] : m->named_parameters())
    if (n == "bias") found = true;
  return found;
}

}  // namespace

BitFitConfig BitFitConfig::from_json(const ojson& j, const std::string& where, std::vector<std::string>* unknown) {
  BitFitConfig c;
  ConfigFields f(j, bitfit_defaults(), "BITFIT", where, unknown, c);
  return c;
}

ojson BitFitConfig::to_json() const { return config_json(*this, bitfit_defaults(), ojson::object()); }

std::vector<CopySpec> BitFitConfig::copies(Model& model) const {
  std::vector<CopySpec> out;
  if (targets.empty()) {
    for (const auto& [path, m] : model.named_modules())
      if (!path.empty() && !dynamic_cast<LayerAdapter*>(m) && has_bias(m)) {
        bool saved = false;  // modules_to_save train whole; is_target's rule for them
        for (const auto& s : targets.modules_to_save)
          if (path == s || path.ends_with("." + s)) saved = true;
        if (!saved) out.push_back({path, m, {"bias"}, ""});
      }
    if (out.empty()) throw std::invalid_argument("BITFIT: " + model.type_name() + " has no bias terms");
    return out;
  }
  for (const auto& [path, m] : find_targets(model, targets, task_type)) {
    if (!has_bias(m)) throw std::invalid_argument("BITFIT: target module '" + path + "' has no bias");
    out.push_back({path, m, {"bias"}, ""});
  }
  return out;
}


namespace {
[[maybe_unused]] const bool kBitFitRegistered = register_method<BitFitConfig>("BITFIT");
}  // namespace

}  // namespace peft
