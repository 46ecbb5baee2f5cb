// C3A's adapter_config.json: HF PEFT 0.21's C3AConfig fields (it has no exclude_modules).
#include <algorithm>

#include "peft/c3a.h"
#include "tuners/config_fields.h"
#include "tuners/registry.h"
#include "util/suggest.h"

namespace peft {

namespace {

const ojson& c3a_defaults() {
  static const auto j = ojson::parse(R"({
    "auto_mapping": null, "base_model_name_or_path": null, "bias": "none", "block_size": 256,
    "block_size_pattern": {}, "inference_mode": true, "init_weights": "xavier_uniform", "layers_pattern": null,
    "layers_to_transform": null, "modules_to_save": null, "peft_type": "C3A", "peft_version": "0.21.2",
    "revision": null, "target_modules": null, "task_type": null
  })");
  return j;
}

}  // namespace

C3AConfig C3AConfig::from_json(const ojson& j, const std::string& where, std::vector<std::string>* unknown) {
  C3AConfig c;
  ConfigFields f(j, c3a_defaults(), "C3A", where, unknown, c);
  // HF checks block sizes per layer (update_layer); a non-positive one is refused there,
  // naming the layer, unless block_size_pattern covers every target.
  c.block_size = f.get<int64_t>("block_size");
  const auto& pat = f.value("block_size_pattern");
  if (!pat.is_null() && !pat.is_object()) f.fail("'block_size_pattern' must be an object of name: block_size");
  if (pat.is_object())
    for (const auto& [k, v] : pat.items())
      c.block_size_pattern.emplace_back(k, strict_get<int64_t>(v, where + ": 'block_size_pattern' entry '" + k + "'"));
  const ojson& init = f.value("init_weights");
  c.init_weights = init.is_boolean() ? (init.get<bool>() ? "true" : "false")
                                     : strict_get<std::string>(init, where + ": 'init_weights'");
  const std::vector<std::string> inits = {"true", "false", "xavier_uniform", "kaiming_uniform", "gaussian"};
  if (std::find(inits.begin(), inits.end(), c.init_weights) == inits.end())
    f.fail("'init_weights' must be true, false, xavier_uniform, kaiming_uniform or gaussian, got '" + c.init_weights +
           "'" + did_you_mean(c.init_weights, inits));
  c.bias = f.get<std::string>("bias");
  if (c.bias != "none" && c.bias != "all" && c.bias != "c3a_only")
    f.fail("'bias' must be none, all or c3a_only, got '" + c.bias + "'");
  if (c.targets.target_regex && (!c.targets.layers_to_transform.empty() || !c.targets.layers_pattern.empty()))
    f.fail("'layers_to_transform' / 'layers_pattern' cannot be used when 'target_modules' is a regex");
  return c;
}

ojson C3AConfig::to_json() const {
  ojson fields;
  fields["block_size"] = block_size;
  ojson pat = ojson::object();
  for (const auto& [k, v] : block_size_pattern) pat[k] = v;
  fields["block_size_pattern"] = pat;
  if (init_weights == "true" || init_weights == "false")
    fields["init_weights"] = init_weights == "true";
  else
    fields["init_weights"] = init_weights;
  fields["bias"] = bias;
  return config_json(*this, c3a_defaults(), fields);
}

namespace {
[[maybe_unused]] const bool kC3ARegistered = register_method<C3AConfig>("C3A");
}  // namespace

}  // namespace peft
