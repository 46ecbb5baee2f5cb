#include "peft/peft_model.h"

#include <ATen/ATen.h>

#include "util/format.h"
#include <c10/core/GradMode.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>

#include "peft/layers.h"
#include "tuners/target_match.h"

namespace fs = std::filesystem;

namespace peft {

namespace {

const std::string kPrefix = "base_model.model.";

nlohmann::ordered_json read_json(const fs::path& p) {
  std::ifstream in(p);
  if (!in) throw std::runtime_error(p.string() + ": cannot open");
  try {
    return nlohmann::ordered_json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(p.string() + ": invalid JSON: " + e.what());
  }
}

}  // namespace

PeftModel::PeftModel(std::shared_ptr<Model> base) : model_(std::move(base)) { apply_state(); }

std::vector<at::Tensor*> PeftModel::slots_of(Module* m) const {
  std::vector<at::Tensor*> out;
  m->visit_slots([&](const std::string&, Module::ParamSlot& s) { out.push_back(s.tensor); });
  return out;
}

void PeftModel::add_adapter(const std::string& name, const LoraConfig& cfg_in, uint64_t seed) {
  if (configs_.count(name)) throw std::invalid_argument("an adapter named '" + name + "' already exists");
  LoraConfig cfg = cfg_in;
  // Sequence classification always trains its head, as HF PEFT does.
  if (cfg.task_type == "SEQ_CLS")
    for (const char* head : {"classifier", "score"})
      if (std::find(cfg.targets.modules_to_save.begin(), cfg.targets.modules_to_save.end(), head) ==
          cfg.targets.modules_to_save.end())
        cfg.targets.modules_to_save.push_back(head);
  auto targets = find_targets(*model_, cfg.targets, cfg.task_type);
  auto gen = at::detail::createCPUGenerator(seed);
  std::vector<Attachment> attached;
  for (auto& [path, m] : targets) {
    const int64_t r = cfg.rank_for(path);
    const double scaling = cfg.scaling_for(path);
    std::shared_ptr<LayerAdapter> a;
    AdaptableLayer* host = dynamic_cast<AdaptableLayer*>(m);
    if (auto* l = dynamic_cast<Linear*>(m)) {
      auto lora = std::make_shared<LoraLinear>(l, l->in_features, l->out_features, r, scaling, cfg.lora_dropout,
                                               cfg.use_dora, cfg.fan_in_fan_out);
      lora->freeze_A = cfg.lora_fa;
      lora->initialize(cfg.init_lora_weights, cfg.use_dora, gen);
      a = lora;
    } else if (auto* c = dynamic_cast<Conv1D*>(m)) {
      // GPT-2's Conv1D stores W as [in, out]: LoRA needs fan_in_fan_out, which HF PEFT
      // also forces on (with a warning) when the config lacks it.
      auto lora = std::make_shared<LoraLinear>(c, c->in_features, c->out_features, r, scaling, cfg.lora_dropout,
                                               cfg.use_dora, /*fan_in_fan_out=*/true);
      lora->freeze_A = cfg.lora_fa;
      lora->initialize(cfg.init_lora_weights, cfg.use_dora, gen);
      a = lora;
    } else if (auto* e = dynamic_cast<Embedding*>(m)) {
      if (cfg.use_dora) throw std::invalid_argument("DoRA on embedding '" + path + "' is not supported");
      auto lora = std::make_shared<LoraEmbedding>(e, e->num_embeddings, e->embedding_dim, r, scaling);
      lora->initialize(cfg.init_lora_weights, gen);
      a = lora;
    } else {
      throw std::invalid_argument("target module '" + path + "' is a " + m->type_name() +
                                  "; LoRA supports Linear, Conv1D and Embedding");
    }
    host->attach(name, a);
    attached.push_back({path, host});
  }
  for (auto& [path, m] : find_modules_to_save(*model_, cfg.targets.modules_to_save)) {
    auto& saved = saved_modules_[path];
    saved.module = m;
    if (saved.original.empty())
      for (auto* t : slots_of(m)) saved.original.push_back(*t);
    std::vector<at::Tensor> copy;
    for (const auto& t : saved.original) copy.push_back(t.detach().clone());
    saved.copies[name] = std::move(copy);
  }
  configs_[name] = cfg;
  attachments_[name] = std::move(attached);
  if (active_.empty()) active_ = {name};
  apply_state();
}

void PeftModel::apply_state() {
  // Which adapters each layer applies.
  for (auto& [name, list] : attachments_)
    for (auto& a : list) {
      a.layer->active.clear();
      for (const auto& act : active_)
        if (a.layer->adapter(act)) a.layer->active.push_back(act);
      a.layer->adapters_disabled = disabled_;
    }
  // modules_to_save: the first active adapter's copy, or the original.
  for (auto& [path, saved] : saved_modules_) {
    const std::vector<at::Tensor>* use = &saved.original;
    if (!disabled_)
      for (const auto& act : active_)
        if (auto it = saved.copies.find(act); it != saved.copies.end()) {
          use = &it->second;
          break;
        }
    auto slots = slots_of(saved.module);
    for (size_t i = 0; i < slots.size(); ++i) *slots[i] = (*use)[i];
  }
  // requires_grad: nothing but the active adapters' parameters, their modules_to_save
  // copies and, per the bias setting, biases.
  for (auto& [_, t] : model_->named_parameters())
    if (t.requires_grad()) t.set_requires_grad(false);
  for (auto& [_, saved] : saved_modules_) {
    for (auto& t : saved.original) t.set_requires_grad(false);
    for (auto& [__, copy] : saved.copies)
      for (auto& t : copy) t.set_requires_grad(false);
  }
  for (const auto& act : active_) {
    for (auto& a : attachments_[act])
      for (auto* t : a.layer->adapter(act)->trainable_slots()) t->set_requires_grad(true);
    for (auto& [_, saved] : saved_modules_)
      if (auto it = saved.copies.find(act); it != saved.copies.end())
        for (auto& t : it->second) t.set_requires_grad(true);
    const auto& cfg = configs_[act];
    if (cfg.bias == "all") {
      for (auto& [n, t] : model_->named_parameters())
        if (n.find("bias") != std::string::npos) t.set_requires_grad(true);
    } else if (cfg.bias == "lora_only") {
      for (auto& a : attachments_[act]) {
        at::Tensor* b = nullptr;
        if (auto* l = dynamic_cast<Linear*>(a.layer)) b = &l->bias;
        if (auto* c = dynamic_cast<Conv1D*>(a.layer)) b = &c->bias;
        if (b && b->defined()) b->set_requires_grad(true);
      }
    }
  }
}

void PeftModel::set_adapter(const std::vector<std::string>& names) {
  for (const auto& n : names)
    if (!configs_.count(n)) throw std::invalid_argument("no adapter named '" + n + "'");
  for (const auto& [n, list] : attachments_)
    for (const auto& a : list)
      if (auto* ad = a.layer->adapter(n); ad && ad->merged())
        throw std::logic_error("unmerge adapters before switching (adapter '" + n + "' is merged)");
  active_ = names;
  apply_state();
}

std::vector<std::string> PeftModel::adapters() const {
  std::vector<std::string> out;
  for (const auto& [n, _] : configs_) out.push_back(n);
  return out;
}

const LoraConfig& PeftModel::config(const std::string& name) const {
  auto it = configs_.find(name);
  if (it == configs_.end()) throw std::invalid_argument("no adapter named '" + name + "'");
  return it->second;
}

void PeftModel::delete_adapter(const std::string& name) {
  config(name);
  for (auto& a : attachments_[name]) {
    if (a.layer->adapter(name)->merged()) a.layer->adapter(name)->unmerge();
    a.layer->detach(name);
  }
  attachments_.erase(name);
  configs_.erase(name);
  for (auto& [_, saved] : saved_modules_) saved.copies.erase(name);
  std::erase(active_, name);
  apply_state();
}

PeftModel::Disabled::Disabled(PeftModel* m) : m_(m) {
  m_->disabled_ = true;
  m_->apply_state();
}

PeftModel::Disabled::~Disabled() {
  m_->disabled_ = false;
  m_->apply_state();
}

void PeftModel::merge() {
  for (const auto& act : active_)
    for (auto& a : attachments_[act]) a.layer->adapter(act)->merge();
}

void PeftModel::unmerge() {
  // Reverse order, so that stacked merges come out as they went in.
  for (auto it = active_.rbegin(); it != active_.rend(); ++it)
    for (auto& a : attachments_[*it]) a.layer->adapter(*it)->unmerge();
}

std::shared_ptr<Model> PeftModel::merge_and_unload() {
  merge();
  apply_state();  // modules_to_save now hold the active copies; keep them
  for (auto& [path, saved] : saved_modules_)
    for (auto* t : slots_of(saved.module)) *t = t->detach();
  saved_modules_.clear();
  for (auto& [name, list] : attachments_)
    for (auto& a : list) a.layer->detach(name);
  attachments_.clear();
  configs_.clear();
  active_.clear();
  for (auto& [_, t] : model_->named_parameters()) t.set_requires_grad(false);
  return model_;
}

std::pair<int64_t, int64_t> PeftModel::trainable_parameters() const {
  int64_t trainable = 0, all = 0;
  for (const auto& [_, t] : model_->named_parameters()) {
    all += t.numel();
    if (t.requires_grad()) trainable += t.numel();
  }
  // HF PEFT also counts the originals and the inactive copies of modules_to_save.
  for (const auto& [_, saved] : saved_modules_) {
    int64_t n = 0;
    for (const auto& t : saved.original) n += t.numel();
    all += n * static_cast<int64_t>(saved.copies.size());
  }
  return {trainable, all};
}

std::string PeftModel::trainable_parameters_line() const {
  auto [t, a] = trainable_parameters();
  char pct[32];
  std::snprintf(pct, sizeof pct, "%.4f", a ? 100.0 * static_cast<double>(t) / static_cast<double>(a) : 0.0);
  return "trainable params: " + with_commas(t) + " || all params: " + with_commas(a) + " || trainable%: " + pct;
}

std::vector<at::Tensor> PeftModel::trainable_tensors() const {
  std::vector<at::Tensor> out;
  for (const auto& [_, t] : model_->named_parameters())
    if (t.requires_grad()) out.push_back(t);
  return out;
}

void PeftModel::train(bool on) {
  for (auto& [_, list] : attachments_)
    for (auto& a : list)
      for (const auto& n : a.layer->adapter_names()) a.layer->adapter(n)->training = on;
}

// --- files ---------------------------------------------------------------------------

NamedTensors PeftModel::adapter_state_dict(const std::string& name) const {
  const LoraConfig& cfg = config(name);
  NamedTensors out;
  for (const auto& a : attachments_.at(name))
    a.layer->adapter(name)->visit_slots(
        [&](const std::string& key, Module::ParamSlot& s) { out.emplace_back(kPrefix + a.path + "." + key, *s.tensor); });
  // Trained biases, under the names HF PEFT's state dict gives them: a wrapped layer's
  // own parameters sit below "base_layer" there.
  std::set<std::string> wrapped;
  for (const auto& a : attachments_.at(name)) wrapped.insert(a.path);
  auto hf_name = [&](const std::string& n) {
    const auto dot = n.rfind('.');
    return wrapped.count(n.substr(0, dot)) ? n.substr(0, dot) + ".base_layer" + n.substr(dot) : n;
  };
  if (cfg.bias != "none") {
    for (const auto& [n, t] : model_->named_parameters()) {
      if (n.find("bias") == std::string::npos || n.find(".lora_") != std::string::npos) continue;
      const bool on_wrapped = wrapped.count(n.substr(0, n.rfind('.'))) > 0;
      if (cfg.bias == "all" || on_wrapped) out.emplace_back(kPrefix + hf_name(n), t);
    }
  }
  for (const auto& [path, saved] : saved_modules_) {
    auto it = saved.copies.find(name);
    if (it == saved.copies.end()) continue;
    size_t i = 0;
    saved.module->visit_slots([&](const std::string& key, Module::ParamSlot& s) {
      out.emplace_back(kPrefix + path + "." + key, it->second[i++]);
    });
  }
  return out;
}

void PeftModel::save_adapter(const std::string& dir, const std::string& name) const {
  fs::create_directories(dir);
  LoraConfig cfg = config(name);
  if (cfg.base_model_name_or_path.empty())
    cfg.base_model_name_or_path = model_->config().value("_name_or_path", std::string());
  const std::string tmp = (fs::path(dir) / "adapter_config.json.tmp").string();
  {
    std::ofstream out(tmp);
    out << cfg.to_json().dump(2) << "\n";
    if (!out) throw std::runtime_error(tmp + ": write failed");
  }
  fs::rename(tmp, fs::path(dir) / "adapter_config.json");
  save_safetensors((fs::path(dir) / "adapter_model.safetensors").string(), adapter_state_dict(name),
                   {{"format", "pt"}});
}

void PeftModel::load_adapter(const std::string& dir, const std::string& name) {
  const fs::path cfg_path = fs::path(dir) / "adapter_config.json";
  const fs::path st_path = fs::path(dir) / "adapter_model.safetensors";
  if (!fs::exists(cfg_path)) throw std::runtime_error(dir + ": no adapter_config.json");
  if (!fs::exists(st_path)) {
    if (fs::exists(fs::path(dir) / "adapter_model.bin"))
      throw std::runtime_error(dir + ": adapter_model.bin (pickle) is not supported; save with safetensors");
    throw std::runtime_error(dir + ": no adapter_model.safetensors");
  }
  auto j = read_json(cfg_path);
  const std::string type = j.value("peft_type", std::string());
  if (type != "LORA")
    throw std::runtime_error(cfg_path.string() + ": unknown or unsupported peft_type '" + type + "' (supported: LORA)");
  std::vector<std::string> unknown;
  LoraConfig cfg = LoraConfig::from_json(j, cfg_path.string(), &unknown);
  for (const auto& k : unknown) std::cerr << "warning: " << cfg_path.string() << ": unknown key '" << k << "' kept\n";
  // Shapes come from the config; values from the file. PiSSA/OLoRA must not rewrite the
  // base while loading, so build with the plain init.
  LoraConfig build = cfg;
  build.init_lora_weights = "true";
  add_adapter(name, build);
  configs_[name] = cfg;
  configs_[name].targets.modules_to_save = build.targets.modules_to_save;

  SafetensorsFile file(st_path.string());
  std::map<std::string, at::Tensor*> expected;
  std::map<std::string, std::vector<int64_t>> shapes;
  for (auto& a : attachments_[name])
    a.layer->adapter(name)->visit_slots([&](const std::string& key, Module::ParamSlot& s) {
      expected[kPrefix + a.path + "." + key] = s.tensor;
      shapes[kPrefix + a.path + "." + key] = s.shape;
    });
  for (auto& [path, saved] : saved_modules_) {
    auto it = saved.copies.find(name);
    if (it == saved.copies.end()) continue;
    size_t i = 0;
    saved.module->visit_slots([&](const std::string& key, Module::ParamSlot& s) {
      expected[kPrefix + path + "." + key] = &it->second[i];
      shapes[kPrefix + path + "." + key] = it->second[i].sizes().vec();
      ++i;
    });
  }
  std::set<std::string> seen;
  for (const auto& key : file.names()) {
    auto it = expected.find(key);
    if (it == expected.end()) {
      // Base parameters an adapter may carry (trained biases; the embedding HF PEFT
      // saves beside an embedding LoRA) replace the base model's own.
      if (key.rfind(kPrefix, 0) == 0) {
        std::string n = key.substr(kPrefix.size());
        if (auto p = n.find(".base_layer."); p != std::string::npos) n.erase(p, 11);
        for (auto& [pn, t] : model_->named_parameters())
          if (pn == n) {
            if (t.sizes() != file.info(key).shape)
              throw std::runtime_error(st_path.string() + ": '" + key + "' has shape " +
                                       c10::str(at::IntArrayRef(file.info(key).shape)) + " but the base has " +
                                       c10::str(t.sizes()));
            c10::NoGradGuard g;
            t.copy_(file.get(key));
            seen.insert(key);
          }
        if (seen.count(key)) continue;
      }
      std::cerr << "warning: " << st_path.string() << ": unexpected key '" << key << "' ignored\n";
      continue;
    }
    const auto& want = shapes[key];
    if (file.info(key).shape != want)
      throw std::runtime_error(st_path.string() + ": '" + key + "' has shape " +
                               c10::str(at::IntArrayRef(file.info(key).shape)) + " but the base model needs " +
                               c10::str(at::IntArrayRef(want)) +
                               " (is this adapter for another base model, or another r?)");
    const bool grad = it->second->requires_grad();
    *it->second = file.get(key).to(at::kFloat).clone().to(it->second->device());
    if (grad) it->second->set_requires_grad(true);
    seen.insert(key);
  }
  for (const auto& [key, _] : expected)
    if (!seen.count(key)) throw std::runtime_error(st_path.string() + ": missing tensor '" + key + "'");
  apply_state();
}

// --- merged checkpoints --------------------------------------------------------------

void save_pretrained(Model& model, const std::string& dir) {
  fs::create_directories(dir);
  NamedTensors tensors;
  const bool vit = model.type_name().rfind("ViT", 0) == 0;
  for (auto& [n, t] : model.named_parameters()) {
    std::string key = n;
    if (vit) {
      // transformers writes ViT checkpoints under its v4 names; so do we.
      static const std::pair<const char*, const char*> kBack[] = {
          {".attention.q_proj.", ".attention.attention.query."}, {".attention.k_proj.", ".attention.attention.key."},
          {".attention.v_proj.", ".attention.attention.value."}, {".attention.o_proj.", ".attention.output.dense."},
          {".mlp.fc1.", ".intermediate.dense."},                 {".mlp.fc2.", ".output.dense."}};
      for (const auto& [from, to] : kBack)
        if (auto p = key.find(from); p != std::string::npos) key.replace(p, std::strlen(from), to);
      if (key.rfind("layers.", 0) == 0) key = "encoder.layer." + key.substr(7);
      if (auto p = key.find(".layers."); p != std::string::npos) key.replace(p, 8, ".encoder.layer.");
    }
    tensors.emplace_back(key, t.detach());
  }
  save_safetensors((fs::path(dir) / "model.safetensors").string(), tensors, {{"format", "pt"}});
  std::ofstream(fs::path(dir) / "config.json") << model.config().dump(2) << "\n";
}

}  // namespace peft
