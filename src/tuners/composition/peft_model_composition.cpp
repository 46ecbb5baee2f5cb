// PeftModel's composition API: set / clear, and the composition_config.json +
// composition_model.safetensors files (docs/COMPOSITION.md).
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <filesystem>
#include <stdexcept>

#include "peft/peft_model.h"
#include "util/atomic_file.h"
#include "util/json_file.h"

namespace fs = std::filesystem;

namespace peft {

namespace {

const char* const kConfigFile = "composition_config.json";
const char* const kTensorFile = "composition_model.safetensors";
const char* const kWeightsKey = "composition.weights";
const char* const kKeyPrefix = "base_model.model.";

std::string joined(const std::vector<std::string>& names) {
  std::string s;
  for (const auto& n : names) s += (s.empty() ? "" : ", ") + n;
  return s.empty() ? "none" : s;
}

}  // namespace

void PeftModel::set_composition(const CompositionConfig& cfg_in, uint64_t seed) {
  CompositionConfig cfg = cfg_in;
  const size_t n = cfg.adapters.size();
  if (cfg.kind != "stack" && cfg.kind != "average" && cfg.kind != "fuse" && cfg.kind != "adapter_fusion")
    throw std::invalid_argument("composition: 'composition' is an unknown kind '" + cfg.kind +
                                "' (stack | average | fuse | adapter_fusion)");
  if (n == 0) throw std::invalid_argument("composition: 'adapters' must name at least one adapter");
  if ((cfg.kind == "average" || cfg.kind == "fuse") && cfg.weights.empty()) cfg.weights.assign(n, 1.0 / double(n));
  if ((cfg.kind == "average" || cfg.kind == "fuse") && cfg.weights.size() != n)
    throw std::invalid_argument("composition: 'weights' has " + std::to_string(cfg.weights.size()) + " values for " +
                                std::to_string(n) + " adapters");
  for (const auto& name : cfg.adapters) {
    auto it = configs_.find(name);
    if (it == configs_.end())
      throw std::invalid_argument("composition: 'adapters' names '" + name + "', which is not loaded (loaded: " +
                                  joined(adapters()) + ")");
    const std::string what = "composition: 'adapters' entry '" + name + "' (" + it->second->peft_type() + ")";
    if (cfg.kind == "adapter_fusion" && it->second->peft_type() != "BOTTLENECK")
      throw std::invalid_argument(what + " is not a bottleneck adapter; 'adapter_fusion' fuses bottleneck adapters");
    if (inputs_.count(name)) throw std::invalid_argument(what + " works on the model's inputs (virtual tokens, or a pass of its own); compositions combine layer adapters");
    for (const auto& a : attachments_.at(name)) {
      LayerAdapter* ad = a.layer->adapter(name);
      if (ad->merged()) throw std::invalid_argument(what + " is merged into the base weights; unmerge it first");
      if (cfg.kind != "stack" && ad->transforms_input())
        throw std::invalid_argument(what + " changes the input of " + a.path + "; only 'stack' composes such adapters");
    }
  }
  for (size_t i = 0; i < n; ++i)
    if (std::find(cfg.adapters.begin() + i + 1, cfg.adapters.end(), cfg.adapters[i]) != cfg.adapters.end())
      throw std::invalid_argument("composition: 'adapters' names '" + cfg.adapters[i] + "' twice");

  if (composition_) clear_composition();
  auto comp = std::make_unique<ActiveComposition>();
  std::vector<float> w(cfg.weights.begin(), cfg.weights.end());
  comp->weights = at::tensor(at::ArrayRef<float>(w.data(), w.size()), at::kFloat).to(model_->device());
  comp->config = cfg;
  auto gen = at::detail::createCPUGenerator(seed);
  try {
    for (auto& [path, m] : model_->named_modules()) {
      auto* host = dynamic_cast<AdaptableLayer*>(m);
      if (!host) continue;
      const bool carries = std::any_of(cfg.adapters.begin(), cfg.adapters.end(),
                                       [&](const std::string& a) { return host->adapter(a) != nullptr; });
      if (!carries) continue;
      auto lc = make_layer_composition(cfg, *host, &comp->weights, gen);
      host->composition = lc;
      comp->layers.push_back({path, host, lc});
    }
  } catch (...) {
    for (auto& l : comp->layers) l.host->composition = nullptr;
    throw;
  }
  composition_ = std::move(comp);
  active_ = cfg.adapters;
  apply_state();
}

void PeftModel::clear_composition() {
  if (!composition_) return;
  for (auto& l : composition_->layers) l.host->composition = nullptr;
  composition_.reset();
  apply_state();
}

NamedTensors PeftModel::composition_state_dict() const {
  NamedTensors out;
  if (!composition_) return out;
  if (composition_->config.trainable_weights) out.emplace_back(kWeightsKey, composition_->weights);
  for (auto& l : composition_->layers)
    l.composition->visit_slots([&](const std::string& key, Module::ParamSlot& s) {
      out.emplace_back(kKeyPrefix + l.path + "." + key, *s.tensor);
    });
  return out;
}

void PeftModel::save_composition(const std::string& dir, bool with_adapters) const {
  if (!composition_) throw std::logic_error("save_composition: no composition is set");
  fs::create_directories(dir);
  if (with_adapters)
    for (const auto& name : composition_->config.adapters) save_adapter((fs::path(dir) / name).string(), name);
  CompositionConfig cfg = composition_->config;
  if (cfg.kind == "fuse") {  // trained weights, readable in the config too
    const at::Tensor w = composition_->weights.detach().to(at::kCPU).to(at::kDouble).contiguous();
    cfg.weights.assign(w.data_ptr<double>(), w.data_ptr<double>() + w.numel());
  }
  const fs::path tensors = fs::path(dir) / kTensorFile;
  if (cfg.has_parameters()) {
    NamedTensors t;
    for (const auto& [k, v] : composition_state_dict()) t.emplace_back(k, v.detach());
    save_safetensors(tensors.string(), t, {{"format", "pt"}});
  } else {
    fs::remove(tensors);  // a stale file of another composition would mislead
  }
  write_json_atomic((fs::path(dir) / kConfigFile).string(), cfg.to_json());
}

void PeftModel::load_composition(const std::string& dir) {
  const fs::path cfg_path = fs::path(dir) / kConfigFile;
  if (!fs::exists(cfg_path)) throw std::runtime_error(dir + ": no " + kConfigFile);
  const auto cfg = CompositionConfig::from_json(read_ordered_json_file(cfg_path.string()), cfg_path.string());
  for (const auto& name : cfg.adapters) {
    if (configs_.count(name)) continue;
    const fs::path sub = fs::path(dir) / name;
    if (!fs::exists(sub / "adapter_config.json"))
      throw std::runtime_error(cfg_path.string() + ": 'adapters' names '" + name + "', which is neither loaded nor saved in " +
                               sub.string());
    load_adapter(sub.string(), name);
  }
  set_composition(cfg);
  if (!cfg.has_parameters()) return;
  const fs::path st_path = fs::path(dir) / kTensorFile;
  try {
    if (!fs::exists(st_path))
      throw std::runtime_error(dir + ": no " + kTensorFile + " (a '" + cfg.kind + "' composition has tensors)");
    SafetensorsFile file(st_path.string());
    const NamedTensors want = composition_state_dict();
    c10::NoGradGuard no_grad;
    for (const auto& [key, t] : want) {
      if (!file.contains(key)) throw std::runtime_error(st_path.string() + ": missing tensor '" + key + "'");
      if (file.info(key).shape != t.sizes().vec())
        throw std::runtime_error(st_path.string() + ": '" + key + "' has shape " +
                                 c10::str(at::IntArrayRef(file.info(key).shape)) + " but the composition needs " +
                                 c10::str(t.sizes()));
      at::Tensor(t).copy_(file.get(key));  // in place: layers hold these very tensors
    }
    for (const auto& key : file.names())
      if (std::none_of(want.begin(), want.end(), [&](const auto& p) { return p.first == key; }))
        throw std::runtime_error(st_path.string() + ": tensor '" + key + "' fits no layer of this composition");
  } catch (...) {
    clear_composition();
    throw;
  }
}

}  // namespace peft
