// OFT's adapter_config.json: HF PEFT 0.21's OFTConfig fields.
#include "peft/oft.h"
#include "tuners/config_fields.h"
#include "tuners/registry.h"

namespace peft {

namespace {

const ojson& oft_defaults() {
  static const auto j = ojson::parse(R"({
    "auto_mapping": null, "base_model_name_or_path": null, "bias": "none", "block_share": false, "coft": false,
    "eps": 6e-05, "exclude_modules": null, "fan_in_fan_out": false, "inference_mode": true, "init_weights": true,
    "layers_pattern": null, "layers_to_transform": null, "module_dropout": 0.0, "modules_to_save": null,
    "num_cayley_neumann_terms": 5, "oft_block_size": 32, "peft_type": "OFT", "peft_version": "0.21.2", "r": 0,
    "revision": null, "target_modules": null, "task_type": null, "use_cayley_neumann": true
  })");
  return j;
}

}  // namespace

OFTConfig OFTConfig::from_json(const ojson& j, const std::string& where, std::vector<std::string>* unknown) {
  OFTConfig c;
  ConfigFields f(j, oft_defaults(), "OFT", where, unknown, c);
  c.r = f.get<int64_t>("r");
  c.oft_block_size = f.get<int64_t>("oft_block_size");
  if (c.r < 0 || c.oft_block_size < 0) f.fail("'r' and 'oft_block_size' must not be negative");
  if (c.r == 0 && c.oft_block_size == 0) f.fail("one of 'r' and 'oft_block_size' must be non-zero");
  if (c.r != 0 && c.oft_block_size != 0)
    f.fail(std::string("set either 'r' or 'oft_block_size' (r x oft_block_size = in_features), not both") +
           (j.contains("oft_block_size") ? "" : "; a file without 'oft_block_size' is from PEFT < 0.14, whose OFT "
                                                "adapters PEFT 0.21 no longer loads"));
  c.module_dropout = f.get<double>("module_dropout");
  if (!(c.module_dropout >= 0.0 && c.module_dropout < 1.0))
    f.fail("'module_dropout' must be in [0, 1), got " + std::to_string(c.module_dropout));
  c.fan_in_fan_out = f.get<bool>("fan_in_fan_out");
  c.bias = f.get<std::string>("bias");
  if (c.bias != "none" && c.bias != "all" && c.bias != "oft_only")
    f.fail("'bias' must be none, all or oft_only, got '" + c.bias + "'");
  c.init_weights = f.get<bool>("init_weights");
  c.coft = f.get<bool>("coft");
  c.eps = f.get<double>("eps");
  if (c.coft && !(c.eps > 0.0)) f.fail("'eps' must be positive with 'coft'");
  c.block_share = f.get<bool>("block_share");
  c.use_cayley_neumann = f.get<bool>("use_cayley_neumann");
  c.num_cayley_neumann_terms = f.get<int64_t>("num_cayley_neumann_terms");
  if (c.num_cayley_neumann_terms < 0 || c.num_cayley_neumann_terms > 64)
    f.fail("'num_cayley_neumann_terms' must be in [0, 64], got " + std::to_string(c.num_cayley_neumann_terms));
  if (!c.targets.layers_pattern.empty() && c.targets.layers_to_transform.empty())
    f.fail("'layers_pattern' needs 'layers_to_transform'");
  return c;
}

ojson OFTConfig::to_json() const {
  ojson fields;
  fields["r"] = r;
  fields["oft_block_size"] = oft_block_size;
  fields["module_dropout"] = module_dropout;
  fields["fan_in_fan_out"] = fan_in_fan_out;
  fields["bias"] = bias;
  fields["init_weights"] = init_weights;
  fields["coft"] = coft;
  fields["eps"] = eps;
  fields["block_share"] = block_share;
  fields["use_cayley_neumann"] = use_cayley_neumann;
  fields["num_cayley_neumann_terms"] = num_cayley_neumann_terms;
  return config_json(*this, oft_defaults(), fields);
}

namespace {
[[maybe_unused]] const bool kOFTRegistered = register_method<OFTConfig>("OFT");
}  // namespace

}  // namespace peft
