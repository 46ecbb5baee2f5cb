#include "tuners/registry.h"
#include "peft/layers.h"
#include "peft/lycoris.h"
#include "tuners/config_fields.h"
#include "tuners/injection.h"
#include "tuners/target_match.h"

namespace peft {

namespace {

// HF PEFT 0.21's fields.
const ojson& loha_defaults() {
  static const auto j = ojson::parse(R"({
    "alpha": 8, "alpha_pattern": {}, "auto_mapping": null, "base_model_name_or_path": null, "exclude_modules": null,
    "inference_mode": true, "init_weights": true, "layers_pattern": null, "layers_to_transform": null,
    "module_dropout": 0.0, "modules_to_save": null, "peft_type": "LOHA", "peft_version": "0.21.2", "r": 8,
    "rank_dropout": 0.0, "rank_pattern": {}, "revision": null, "target_modules": null, "task_type": null,
    "use_effective_conv2d": false
  })");
  return j;
}
const ojson& lokr_defaults() {
  static const auto j = [] {
    auto d = loha_defaults();
    d["peft_type"] = "LOKR";
    d["decompose_both"] = false;
    d["decompose_factor"] = -1;
    d["rank_dropout_scale"] = false;
    return d;
  }();
  return j;
}

// Shared fields; dropouts and per-module patterns are refused rather than ignored.
void read_lycoris(const ConfigFields& f, LycorisConfig& c) {
  c.r = f.get<int64_t>("r");
  c.alpha = f.get<double>("alpha");
  if (!f.value("init_weights").is_boolean()) f.fail("init_weights must be true or false");
  c.init_weights = f.get<bool>("init_weights");
  if (c.r <= 0) f.fail("'r' must be positive, got " + std::to_string(c.r));
  for (const char* k : {"module_dropout", "rank_dropout"})
    if (f.get<double>(k) != 0.0) f.fail(std::string("'") + k + "' other than 0 is not supported");
  for (const char* k : {"rank_pattern", "alpha_pattern"})
    if (!f.value(k).is_null() && !f.value(k).empty()) f.fail(std::string("'") + k + "' is not supported");
  f.require_default("use_effective_conv2d");
  if (c.targets.empty()) f.fail("'target_modules' is required");
}

ojson lycoris_fields(const LycorisConfig& c) {
  ojson j;
  j["r"] = c.r;
  if (c.alpha == static_cast<double>(static_cast<int64_t>(c.alpha))) j["alpha"] = static_cast<int64_t>(c.alpha);
  else j["alpha"] = c.alpha;
  j["init_weights"] = c.init_weights;
  return j;
}

// kaiming_uniform_(a=sqrt(5)) as torch does it: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
at::Tensor kaiming(at::IntArrayRef shape, at::Generator& gen) {
  const double bound = 1.0 / std::sqrt(static_cast<double>(shape[1]));
  return at::rand(shape, gen, at::TensorOptions(at::kFloat)) * (2 * bound) - bound;
}

}  // namespace

NamedModules LycorisConfig::layer_targets(Model& model) const { return find_targets(model, targets, task_type); }

LoHaConfig LoHaConfig::from_json(const ojson& j, const std::string& where, std::vector<std::string>* unknown) {
  LoHaConfig c;
  ConfigFields f(j, loha_defaults(), "LOHA", where, unknown, c);
  read_lycoris(f, c);
  return c;
}

ojson LoHaConfig::to_json() const { return config_json(*this, loha_defaults(), lycoris_fields(*this)); }

std::shared_ptr<LayerAdapter> LoHaConfig::make_layer_adapter(const std::string& path, Module& m,
                                                            at::Generator& gen) const {
  auto& l = linear_host("LOHA", path, m);
  auto a = std::make_shared<LoHaLayer>(&l, r);
  a->scaling = scaling();
  // HF: w1_a, w1_b, w2_a kaiming; w2_b zero (so dW = 0) unless init_weights is false.
  a->w1_a = kaiming(a->w1_a.sizes(), gen);
  a->w1_b = kaiming(a->w1_b.sizes(), gen);
  a->w2_a = kaiming(a->w2_a.sizes(), gen);
  a->w2_b = init_weights ? at::zeros(a->w2_b.sizes(), at::kFloat) : kaiming(a->w2_b.sizes(), gen);
  a->to(l.weight_tensor()->device());
  return a;
}

LoKrConfig LoKrConfig::from_json(const ojson& j, const std::string& where, std::vector<std::string>* unknown) {
  LoKrConfig c;
  ConfigFields f(j, lokr_defaults(), "LOKR", where, unknown, c);
  read_lycoris(f, c);
  c.decompose_both = f.get<bool>("decompose_both");
  c.decompose_factor = f.get<int64_t>("decompose_factor");
  f.require_default("rank_dropout_scale");
  return c;
}

ojson LoKrConfig::to_json() const {
  ojson fields = lycoris_fields(*this);
  fields["decompose_both"] = decompose_both;
  fields["decompose_factor"] = decompose_factor;
  return config_json(*this, lokr_defaults(), fields);
}

std::shared_ptr<LayerAdapter> LoKrConfig::make_layer_adapter(const std::string& path, Module& m,
                                                            at::Generator& gen) const {
  auto& l = linear_host("LOKR", path, m);
  auto a = std::make_shared<LoKrLayer>(&l, r, decompose_both, decompose_factor);
  a->scaling = scaling();
  // HF: w1 (or w1_a) zero so dW = 0, the rest kaiming; init_weights false: all random.
  for (auto* t : {&a->w1, &a->w1_a, &a->w1_b, &a->w2, &a->w2_a, &a->w2_b})
    if (t->defined()) *t = kaiming(t->sizes(), gen);
  if (init_weights) {
    if (a->full_w1) a->w1.zero_();
    else a->w1_a.zero_();
  }
  a->to(l.weight_tensor()->device());
  return a;
}


namespace {
[[maybe_unused]] const bool kLoHaRegistered = register_method<LoHaConfig>("LOHA");
[[maybe_unused]] const bool kLoKrRegistered = register_method<LoKrConfig>("LOKR");
}  // namespace

}  // namespace peft
