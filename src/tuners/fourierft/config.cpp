// FourierFT's adapter_config.json: HF PEFT 0.21's FourierFTConfig fields.
#include "peft/fourierft.h"
#include "tuners/config_fields.h"
#include "tuners/registry.h"

namespace peft {

namespace {

const ojson& fourierft_defaults() {
  static const auto j = ojson::parse(R"({
    "auto_mapping": null, "base_model_name_or_path": null, "bias": "none", "exclude_modules": null,
    "fan_in_fan_out": false, "inference_mode": true, "init_weights": false, "layers_pattern": null,
    "layers_to_transform": null, "modules_to_save": null, "n_frequency": 1000, "n_frequency_pattern": {},
    "peft_type": "FOURIERFT", "peft_version": "0.21.2", "random_loc_seed": 777, "revision": null,
    "scaling": 150.0, "target_modules": null, "task_type": null
  })");
  return j;
}

}  // namespace

FourierFTConfig FourierFTConfig::from_json(const ojson& j, const std::string& where, std::vector<std::string>* unknown) {
  FourierFTConfig c;
  ConfigFields f(j, fourierft_defaults(), "FOURIERFT", where, unknown, c);
  c.n_frequency = f.get<int64_t>("n_frequency");
  if (c.n_frequency <= 0) f.fail("'n_frequency' must be positive, got " + std::to_string(c.n_frequency));
  c.scaling = f.get<double>("scaling");
  // torch.Generator.manual_seed takes any 64-bit integer; a negative one wraps as uint64.
  const auto& seed = f.value("random_loc_seed");
  if (seed.is_null()) f.fail("'random_loc_seed' must be an integer");
  c.random_loc_seed = seed.is_number_unsigned() ? seed.get<uint64_t>()
                                                : static_cast<uint64_t>(f.get<int64_t>("random_loc_seed"));
  c.fan_in_fan_out = f.get<bool>("fan_in_fan_out");
  c.bias = f.get<std::string>("bias");
  if (c.bias != "none" && c.bias != "all" && c.bias != "fourier_only")
    f.fail("'bias' must be none, all or fourier_only, got '" + c.bias + "'");
  c.init_weights = f.get<bool>("init_weights");
  const auto& pat = f.value("n_frequency_pattern");
  if (!pat.is_null() && !pat.is_object()) f.fail("'n_frequency_pattern' must be an object of name: n_frequency");
  if (pat.is_object())
    for (const auto& [k, v] : pat.items()) {
      c.n_frequency_pattern[k] = strict_get<int64_t>(v, where + ": 'n_frequency_pattern' entry '" + k + "'");
      if (c.n_frequency_pattern[k] <= 0) f.fail("'n_frequency_pattern' entry '" + k + "' must be positive");
    }
  if (c.targets.target_regex && (!c.targets.layers_to_transform.empty() || !c.targets.layers_pattern.empty()))
    f.fail("'layers_to_transform' / 'layers_pattern' cannot be used when 'target_modules' is a regex");
  if (!c.targets.layers_pattern.empty() && c.targets.layers_to_transform.empty())
    f.fail("'layers_pattern' needs 'layers_to_transform'");
  return c;
}

ojson FourierFTConfig::to_json() const {
  ojson fields;
  fields["n_frequency"] = n_frequency;
  fields["scaling"] = scaling;
  if (random_loc_seed > static_cast<uint64_t>(INT64_MAX))
    fields["random_loc_seed"] = static_cast<int64_t>(random_loc_seed);  // negative in the file
  else
    fields["random_loc_seed"] = random_loc_seed;
  fields["fan_in_fan_out"] = fan_in_fan_out;
  fields["bias"] = bias;
  fields["init_weights"] = init_weights;
  ojson pat = ojson::object();
  for (const auto& [k, v] : n_frequency_pattern) pat[k] = v;
  fields["n_frequency_pattern"] = pat;
  return config_json(*this, fourierft_defaults(), fields);
}

namespace {
[[maybe_unused]] const bool kFourierFTRegistered = register_method<FourierFTConfig>("FOURIERFT");
}  // namespace

}  // namespace peft
