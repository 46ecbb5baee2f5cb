// MoleConfig: reading `experts` (LoRA adapter folders or embedded LoRA configs), finding
// the layers they adapt, and building each layer's router + expert factors.
#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <set>

#include "peft/layers.h"
#include "peft/lora.h"
#include "peft/mole.h"
#include "peft/safetensors.h"
#include "tuners/config_fields.h"
#include "tuners/registry.h"
#include "tuners/target_match.h"

namespace fs = std::filesystem;

namespace peft {

namespace {

const ojson& mole_defaults() {
  static const auto j = ojson::parse(R"({
    "auto_mapping": null, "base_model_name_or_path": null, "embed_experts": false, "exclude_modules": null,
    "experts": {}, "inference_mode": true, "layers_pattern": null, "layers_to_transform": null,
    "modules_to_save": null, "peft_type": "MOLE", "peft_version": "0.21.2", "revision": null,
    "router_aux_loss_coef": 0.0, "router_init_std": 0.02, "target_modules": null, "task_type": null,
    "top_k": 2, "trainable_experts": false
  })");
  return j;
}

// Relative expert folders are relative to the folder of the adapter_config.json being
// read (`where`), or to the working directory for a config written by hand.
fs::path expert_dir(const std::string& folder, const std::string& where) {
  fs::path p(folder);
  if (p.is_relative() && fs::is_regular_file(where)) p = fs::path(where).parent_path() / p;
  return fs::absolute(p).lexically_normal();
}

// The features of a LoRA expert the mixture computes: plain low-rank deltas on Linear layers.
void check_expert_features(const LoraConfig& c, const std::string& where) {
  if (c.use_dora) throw std::runtime_error(where + ": DoRA experts are not supported by MOLE ('use_dora')");
  if (c.bias != "none") throw std::runtime_error(where + ": experts that train biases are not supported by MOLE ('bias')");
  if (!c.targets.modules_to_save.empty())
    throw std::runtime_error(where + ": experts with modules_to_save are not supported by MOLE ('modules_to_save')");
  if (!c.trainable_token_indices.is_null())
    throw std::runtime_error(where + ": experts with trainable tokens are not supported by MOLE ('trainable_token_indices')");
}

MoleExpert read_expert(const std::string& name, const ojson& v, const std::string& where) {
  const std::string what = where + ": experts." + name;
  if (name.empty() || name.find('.') != std::string::npos)
    throw std::runtime_error(where + ": expert name '" + name + "' must be non-empty and without '.' ('experts')");
  MoleExpert e;
  e.name = name;
  std::string cfg_where = what;
  if (v.is_string()) {
    e.dir = expert_dir(v.get<std::string>(), where).string();
    const fs::path cfg = fs::path(e.dir) / "adapter_config.json";
    if (!fs::is_regular_file(cfg)) throw std::runtime_error(what + ": no adapter_config.json in '" + e.dir + "'");
    if (!fs::is_regular_file(fs::path(e.dir) / "adapter_model.safetensors"))
      throw std::runtime_error(what + ": no adapter_model.safetensors in '" + e.dir + "'");
    e.lora_json = read_ordered_json_file(cfg.string());
    cfg_where = cfg.string();
  } else if (v.is_object()) {
    e.lora_json = v;
  } else {
    throw std::runtime_error(what + " must be an adapter folder or an embedded LoRA config, got " + quote_json(v));
  }
  const std::string type = e.lora_json.value("peft_type", std::string());
  if (type == "XLORA")
    throw std::runtime_error(what + ": an X-LoRA adapter (peft_type XLORA) is not a LoRA expert; MOLE mixes plain "
                             "LoRA adapters with per-layer routers (docs/MOLE.md explains why X-LoRA files differ)");
  if (type != "LORA")
    throw std::runtime_error(what + ": peft_type '" + type + "' is not LORA; MOLE experts are LoRA adapters");
  std::vector<std::string> unknown;  // HF PEFT writes keys we need not model
  e.lora = std::make_shared<LoraConfig>(LoraConfig::from_json(e.lora_json, cfg_where, &unknown));
  check_expert_features(*e.lora, cfg_where);
  return e;
}

}  // namespace

MoleConfig MoleConfig::from_json(const ojson& j, const std::string& where, std::vector<std::string>* unknown) {
  MoleConfig c;
  c.where = where;
  ConfigFields f(j, mole_defaults(), "MOLE", where, unknown, c);
  const ojson& ex = f.value("experts");
  if (!ex.is_object() || ex.empty()) f.fail("'experts' must map expert names to LoRA adapter folders");
  for (const auto& [name, v] : ex.items()) c.experts.push_back(read_expert(name, v, where));
  // Router rows follow the names in sorted order: JSON objects are saved with sorted keys
  // (as HF PEFT writes them), so any other order would not survive a save.
  std::sort(c.experts.begin(), c.experts.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  c.top_k = f.get<int64_t>("top_k");
  if (c.top_k < 1 || c.top_k > c.n_experts())
    f.fail("'top_k' must be between 1 and the number of experts (" + std::to_string(c.n_experts()) + "), got " +
           std::to_string(c.top_k));
  c.router_aux_loss_coef = f.get<double>("router_aux_loss_coef");
  if (!std::isfinite(c.router_aux_loss_coef) || c.router_aux_loss_coef < 0)
    f.fail("'router_aux_loss_coef' must be >= 0 (0 disables the load-balancing loss)");
  c.router_init_std = f.get<double>("router_init_std");
  if (!std::isfinite(c.router_init_std) || c.router_init_std < 0) f.fail("'router_init_std' must be >= 0");
  c.trainable_experts = f.get<bool>("trainable_experts");
  c.embed_experts = f.get<bool>("embed_experts");
  return c;
}

ojson MoleConfig::to_json() const {
  ojson fields, ex = ojson::object();
  for (const auto& e : experts) ex[e.name] = embedded() ? e.lora_json : ojson(e.dir);
  fields["experts"] = ex;
  fields["top_k"] = top_k;
  fields["router_aux_loss_coef"] = router_aux_loss_coef;
  fields["router_init_std"] = router_init_std;
  fields["trainable_experts"] = trainable_experts;
  fields["embed_experts"] = embedded();
  return config_json(*this, mole_defaults(), fields);
}

NamedModules MoleConfig::layer_targets(Model& model) const {
  // Which layers each expert adapts, by PEFT's own matching of its config.
  std::set<std::string> adapted;
  NamedModules all;
  for (const auto& e : experts)
    for (auto& [path, m] : e.lora->layer_targets(model))
      if (adapted.insert(path).second) all.emplace_back(path, m);
  targeted_ = std::make_shared<std::map<std::string, std::set<std::string>>>();
  for (const auto& e : experts) {
    auto& mine = (*targeted_)[e.name];
    for (auto& [path, _] : e.lora->layer_targets(model)) mine.insert(path);
  }
  if (targets.empty()) return all;
  auto chosen = find_targets(model, targets, task_type);
  for (const auto& [path, _] : chosen)
    if (!adapted.count(path))
      throw std::invalid_argument(where + ": target_modules selects '" + path + "', which no expert adapts");
  return chosen;
}

namespace {

// One expert's factors on one layer, from its own folder or (embedded) zeros of the right
// shape that loading fills in.
MoleLayer::Factors expert_factors(const MoleExpert& e, const std::string& path, const AdaptableLayer& host,
                                  const std::string& where) {
  MoleLayer::Factors f;
  f.name = e.name;
  f.scaling = e.lora->scaling_for(path);
  const int64_t r = e.lora->rank_for(path), in = host.input_dim(), out = host.output_dim();
  const auto dev = host.device();
  if (e.dir.empty()) {
    f.A = at::zeros({r, in}, at::kFloat).to(dev);
    f.B = at::zeros({out, r}, at::kFloat).to(dev);
    return f;
  }
  const std::string file_path = (fs::path(e.dir) / "adapter_model.safetensors").string();
  SafetensorsFile file(file_path);
  auto take = [&](const std::string& suffix, const std::vector<int64_t>& want) {
    const std::string key = "base_model.model." + path + "." + suffix;
    if (!file.contains(key))
      throw std::runtime_error(where + ": expert '" + e.name + "' (" + file_path + ") has no tensor '" + key + "'");
    if (file.info(key).shape != want)
      throw std::runtime_error(where + ": expert '" + e.name + "' (" + file_path + "): '" + key + "' has shape " +
                               c10::str(at::IntArrayRef(file.info(key).shape)) + " but the base model needs " +
                               c10::str(at::IntArrayRef(want)) + " (an expert for another base model?)");
    return file.get(key).to(at::kFloat).clone().to(dev);
  };
  f.A = take("lora_A.weight", {r, in});
  f.B = take("lora_B.weight", {out, r});
  return f;
}

}  // namespace

std::shared_ptr<LayerAdapter> MoleConfig::make_layer_adapter(const std::string& path, Module& m,
                                                             at::Generator& gen) const {
  auto* host = dynamic_cast<AdaptableLayer*>(&m);
  if (!host || host->kind() != LayerKind::kLinear)
    throw std::invalid_argument("MOLE: target module '" + path + "' is a " + m.type_name() +
                                "; MOLE supports Linear layers");
  std::vector<MoleLayer::Factors> fs;
  for (const auto& e : experts) {
    const bool has = targeted_ && targeted_->count(e.name) && targeted_->at(e.name).count(path);
    if (has) fs.push_back(expert_factors(e, path, *host, where));
    else fs.push_back({e.name, {}, {}, 0.0});  // this expert leaves the layer alone
  }
  auto a = std::make_shared<MoleLayer>(host, *this, std::move(fs));
  a->router = (at::randn(a->router.sizes(), gen, at::TensorOptions(at::kFloat)) * router_init_std).to(host->device());
  return a;
}

namespace {
[[maybe_unused]] const bool kMoleRegistered = register_method<MoleConfig>("MOLE");
}  // namespace

}  // namespace peft
