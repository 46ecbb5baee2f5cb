// WaveFT's adapter_config.json: HF PEFT 0.21's WaveFTConfig fields.
#include "peft/waveft.h"
#include "tuners/config_fields.h"
#include "tuners/pattern_field.h"
#include "tuners/registry.h"
#include "tuners/seed_field.h"
#include "tuners/waveft/wavelets.h"

namespace peft {

namespace {

const ojson& waveft_defaults() {
  static const auto j = ojson::parse(R"({
    "auto_mapping": null, "base_model_name_or_path": null, "bias": "none", "exclude_modules": null,
    "fan_in_fan_out": false, "inference_mode": true, "init_weights": true, "layers_pattern": null,
    "layers_to_transform": null, "modules_to_save": null, "n_frequency": 2592, "n_frequency_pattern": {},
    "peft_type": "WAVEFT", "peft_version": "0.21.2", "proportional_parameters": false, "random_loc_seed": 777,
    "revision": null, "scaling": 25.0, "target_modules": null, "task_type": null, "use_idwt": true,
    "wavelet_family": "db1"
  })");
  return j;
}

}  // namespace

WaveftConfig WaveftConfig::from_json(const ojson& j, const std::string& where, std::vector<std::string>* unknown) {
  WaveftConfig c;
  ConfigFields f(j, waveft_defaults(), "WAVEFT", where, unknown, c);
  c.n_frequency = f.get<int64_t>("n_frequency");
  c.scaling = f.get<double>("scaling");
  c.wavelet_family = f.get<std::string>("wavelet_family");
  c.use_idwt = f.get<bool>("use_idwt");
  c.random_loc_seed = torch_seed_field(f, "random_loc_seed");
  c.fan_in_fan_out = f.get<bool>("fan_in_fan_out");
  c.bias = f.get<std::string>("bias");
  c.proportional_parameters = f.get<bool>("proportional_parameters");
  c.init_weights = f.get<bool>("init_weights");
  c.n_frequency_pattern = read_pattern<int64_t>(f, "n_frequency_pattern");
  if (c.n_frequency <= 0) f.fail("'n_frequency' must be a positive integer, got " + std::to_string(c.n_frequency));
  for (const auto& [k, n] : c.n_frequency_pattern)
    if (n <= 0) f.fail("'n_frequency_pattern' entry '" + k + "' must be positive, got " + std::to_string(n));
  if (const auto why = wavelet_family_refusal(c.wavelet_family); !why.empty()) f.fail(why);
  if (c.bias != "none" && c.bias != "all" && c.bias != "waveft_only")
    f.fail("'bias' must be none, all or waveft_only, got '" + c.bias + "'");
  if (c.targets.target_regex && (!c.targets.layers_to_transform.empty() || !c.targets.layers_pattern.empty()))
    f.fail("'layers_to_transform' / 'layers_pattern' cannot be used when 'target_modules' is a regex");
  if (!c.targets.layers_pattern.empty() && c.targets.layers_to_transform.empty())
    f.fail("'layers_pattern' needs 'layers_to_transform'");
  return c;
}

ojson WaveftConfig::to_json() const {
  ojson fields;
  fields["n_frequency"] = n_frequency;
  fields["scaling"] = scaling;
  fields["wavelet_family"] = wavelet_family;
  fields["use_idwt"] = use_idwt;
  fields["random_loc_seed"] = torch_seed_json(random_loc_seed);
  fields["fan_in_fan_out"] = fan_in_fan_out;
  fields["bias"] = bias;
  fields["proportional_parameters"] = proportional_parameters;
  fields["init_weights"] = init_weights;
  fields["n_frequency_pattern"] = pattern_json(n_frequency_pattern);
  return config_json(*this, waveft_defaults(), fields);
}

namespace {
[[maybe_unused]] const bool kWaveftRegistered = register_method<WaveftConfig>("WAVEFT");
}  // namespace

}  // namespace peft
