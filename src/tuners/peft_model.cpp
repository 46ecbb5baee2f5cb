#include "peft/peft_model.h"

#include <ATen/ATen.h>

#include "util/atomic_file.h"
#include "util/format.h"
#include "util/json_file.h"
#include <c10/core/GradMode.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <set>

#include "peft/layers.h"
#include "peft/seq2seq.h"
#include "tuners/file_tensors.h"
#include "tuners/target_match.h"

namespace fs = std::filesystem;

namespace peft {

namespace {

// Our addition to an adapter folder: a training prompt encoder's own weights.
const char* const kPromptEncoderFile = "prompt_encoder.safetensors";

// Puts `key` of `file` (named `where` in errors) into `slot`, whose shape must be `want`
// ("... but <who_needs> <want><advice>" otherwise). The slot keeps its requires_grad.
void assign_checked(const at::Tensor& t, const std::string& where, const std::string& key, at::Tensor* slot,
                    const std::vector<int64_t>& want, const std::string& who_needs, const std::string& advice = "") {
  if (t.sizes() != at::IntArrayRef(want))
    throw std::runtime_error(where + ": '" + key + "' has shape " + c10::str(t.sizes()) + " but " + who_needs + " " +
                             c10::str(at::IntArrayRef(want)) + advice);
  const bool grad = slot->requires_grad();
  // Integer tensors (SHiRA's positions) keep an integer slot's dtype: a float would round
  // positions past 2^24.
  const bool integral = slot->defined() && !slot->is_floating_point();
  *slot = t.to(integral ? slot->scalar_type() : at::kFloat).clone().to(slot->device());
  if (grad) slot->set_requires_grad(true);
}

nlohmann::ordered_json read_json(const fs::path& p) { return read_ordered_json_file(p.string()); }

}  // namespace

PeftModel::PeftModel(std::shared_ptr<Model> base) : model_(std::move(base)) { apply_state(); }

namespace {
// Every parameter of `m` by local dotted name, or only those named.
std::vector<std::pair<std::string, at::Tensor*>> params_of(Module* m, const std::vector<std::string>& only) {
  std::vector<std::pair<std::string, at::Tensor*>> out;
  m->visit_slots([&](const std::string& key, Module::ParamSlot& s) {
    if (only.empty() || std::find(only.begin(), only.end(), key) != only.end()) out.emplace_back(key, s.tensor);
  });
  return out;
}
}  // namespace

void PeftModel::add_copy(const std::string& adapter, const CopySpec& spec) {
  auto& saved = saved_modules_[spec.path];
  auto params = params_of(spec.module, spec.params);
  std::vector<std::string> names;
  for (const auto& [n, t] : params)
    if (t->defined()) names.push_back(n);
  if (names.empty()) throw std::invalid_argument("'" + spec.path + "' has no parameters to train");
  for (const auto& [n, t] : params)
    if (t->defined() && !t->is_floating_point())  // packed 4-bit codes (transformers quantizes heads too)
      throw std::invalid_argument("'" + spec.path + "' is stored 4-bit and cannot be trained as a copy " +
                                  "(modules_to_save); keep it full precision with llm_int8_skip_modules=[\"" +
                                  spec.path + "\"] (peft train) or --skip-modules " + spec.path);
  if (saved.module == nullptr) {
    saved.module = spec.module;
    saved.names = names;
    for (const auto& [n, t] : params)
      if (t->defined()) {
        saved.slots.push_back(t);
        saved.original.push_back(*t);
      }
  } else if (saved.names != names) {
    throw std::invalid_argument("'" + spec.path + "' already has trainable copies of other parameters");
  }
  std::vector<at::Tensor> copy;
  for (const auto& t : saved.original) copy.push_back(t.detach().clone());
  saved.copies[adapter] = std::move(copy);
  saved.infix[adapter] = spec.infix;
}

void PeftModel::add_adapter(const std::string& name, const AdapterConfig& cfg_in, uint64_t seed) {
  if (configs_.count(name)) throw std::invalid_argument("an adapter named '" + name + "' already exists");
  auto cfg = cfg_in.clone();
  cfg->resolve(*model_);
  // Sequence and token classification always train their head, as HF PEFT does.
  auto& mts = cfg->targets.modules_to_save;
  if (cfg->task_type == "SEQ_CLS" || cfg->task_type == "TOKEN_CLS")
    for (const char* head : {"classifier", "score"})
      if (std::find(mts.begin(), mts.end(), head) == mts.end()) mts.push_back(head);
  auto gen = at::detail::createCPUGenerator(seed);
  std::vector<Attachment> attached;
  const auto copies = cfg->copies(*model_);
  try {
    for (auto& [path, m] : cfg->layer_targets(*model_)) {
      auto* host = dynamic_cast<AdaptableLayer*>(m);
      if (!host)
        throw std::invalid_argument(cfg->peft_type() + ": target module '" + path + "' is a " + m->type_name() +
                                    ", which takes no adapters");
      host->attach(name, cfg->make_layer_adapter(path, *m, gen));
      attached.push_back({path, host});
    }
    for (const auto& spec : copies) add_copy(name, spec);
    for (auto& [path, m] : find_modules_to_save(*model_, mts)) add_copy(name, {path, m, {}, ""});
    if (auto in = cfg->make_input_adapter(*model_, gen)) inputs_[name] = in;
  } catch (...) {
    for (auto& a : attached) a.layer->detach(name);
    for (auto& [_, saved] : saved_modules_) saved.copies.erase(name);
    std::erase_if(saved_modules_, [](const auto& p) { return p.second.copies.empty(); });
    throw;
  }
  // Targets a method chose itself (no target_modules given) are saved by name, so the
  // file says exactly where the adapter sits.
  if (cfg->targets.empty()) {
    std::vector<std::string> paths;
    for (const auto& a : attached) paths.push_back(a.path);
    for (const auto& spec : copies) paths.push_back(spec.path);
    if (!paths.empty()) cfg->targets.target_list = paths;
  }
  configs_[name] = std::move(cfg);
  attachments_[name] = std::move(attached);
  if (active_.empty()) active_ = {name};
  apply_state();
}

void PeftModel::set_adapter_scale(const std::string& name, double multiplier) {
  auto cfg = configs_.find(name);
  if (cfg == configs_.end()) throw std::invalid_argument("no adapter named '" + name + "'");
  if (!std::isfinite(multiplier)) throw std::invalid_argument("an adapter scale must be a finite number");
  if (inputs_.count(name) && multiplier != 1.0)  // virtual tokens have no strength to scale
    throw std::invalid_argument("adapter '" + name + "' (" + cfg->second->peft_type() + ") has no scale to set");
  for (const auto& a : attachments_.at(name)) {
    LayerAdapter* ad = a.layer->adapter(name);
    if (ad->merged()) throw std::logic_error("adapter '" + name + "' is merged; unmerge it before scaling it");
    if (!ad->set_scale(multiplier))
      throw std::invalid_argument("adapter '" + name + "' (" + cfg->second->peft_type() + ") has no scale to set");
  }
}

std::string PeftModel::mixed_batch_refusal(const std::string& name) const {
  auto cfg = configs_.find(name);
  if (cfg == configs_.end()) return "no adapter named '" + name + "' is loaded";
  const std::string what = "adapter '" + name + "' (" + cfg->second->peft_type() + ")";
  if (inputs_.count(name) && as_seq2seq(*model_))
    return what + " works on the model's inputs (virtual tokens), which a batch mixing adapters on an "
                  "encoder-decoder model does not take (peft generate runs it)";
  if (inputs_.count(name) && virtual_tokens(name) == 0)
    return what + " works on the model's inputs beyond virtual tokens of its own (task-routed prompts, or a pass "
                  "of its own before the model's), so it cannot join a batch mixing adapters (peft generate runs it)";
  for (const auto& [path, saved] : saved_modules_)
    if (saved.copies.count(name)) return what + " has its own copy of " + path + " (modules_to_save)";
  if (!cfg->second->trained_base_parameters(*model_, adapted_paths(name)).empty())
    return what + " changes base parameters";
  for (const auto& a : attachments_.at(name))
    if (a.layer->adapter(name)->merged()) return what + " is merged into the base weights";
  return "";
}

MixedBatch PeftModel::mixed_batch(const std::vector<std::string>& row_adapters) const {
  std::vector<std::string> rows(row_adapters);
  std::set<std::string> checked;
  for (auto& n : rows) {
    if (n == "__base__") n.clear();
    if (n.empty() || !checked.insert(n).second) continue;
    if (auto why = mixed_batch_refusal(n); !why.empty()) throw std::invalid_argument(why);
  }
  return MixedBatch(rows, model_->device());
}

bool PeftModel::active_swaps_in() const {
  if (disabled_) return false;
  for (const auto& act : active_) {
    if (inputs_.count(act)) return true;
    for (const auto& [_, saved] : saved_modules_)
      if (saved.copies.count(act)) return true;
  }
  return false;
}

ModelOutputs PeftModel::forward_mixed(const ModelInputs& in, const MixedBatch& mixed) {
  if (mixed.batch() != in.batch_size())
    throw std::invalid_argument("forward_mixed: " + std::to_string(mixed.batch()) + " adapter names for " +
                                std::to_string(in.batch_size()) + " rows");
  if (!in.inputs_embeds.defined() && (!in.cache || in.cache->length() == 0))
    for (const auto& g : mixed.groups())
      if (inputs_.count(g.adapter))
        throw std::invalid_argument("forward_mixed: the rows of adapter '" + g.adapter +
                                    "' need its virtual tokens in their inputs (PeftModel::with_virtual_tokens)");
  // The base model underneath: no active adapter's copies or soft prompt (layer adapters
  // follow the rows' names anyway, so most of the time there is nothing to switch off).
  std::optional<Disabled> off;
  if (active_swaps_in()) off.emplace(this);
  MixedBatch::Scope scope(&mixed);
  return model_->forward(in);
}

Seq2SeqOutputs PeftModel::forward_mixed(const Seq2SeqInputs& in, const MixedBatch& mixed) {
  Seq2SeqLM* s2s = as_seq2seq(*model_);
  if (!s2s) throw std::invalid_argument("forward_mixed: " + model_->type_name() + " is not an encoder-decoder model");
  const int64_t rows = in.decoder_input_ids.defined() ? in.decoder_input_ids.size(0) : -1;
  if (mixed.batch() != rows)
    throw std::invalid_argument("forward_mixed: " + std::to_string(mixed.batch()) + " adapter names for " +
                                std::to_string(rows) + " rows");
  // (mixed_batch refused the rest; an input adapter's rows would silently lose their tokens.)
  for (const auto& g : mixed.groups())
    if (inputs_.count(g.adapter)) throw std::invalid_argument("forward_mixed: " + mixed_batch_refusal(g.adapter));
  std::optional<Disabled> off;
  if (active_swaps_in()) off.emplace(this);
  MixedBatch::Scope scope(&mixed);
  return s2s->forward_seq2seq(in);
}

InputAdapter* PeftModel::input_adapter(const std::string& name) const {
  auto it = inputs_.find(name);
  return it == inputs_.end() ? nullptr : it->second.get();
}

void PeftModel::to(at::Device device) {
  if (composition_) throw std::logic_error("PeftModel::to: clear the composition first (its tensors are not moved)");
  c10::NoGradGuard no_grad;
  // Original -> moved, keyed by the original tensor (TensorImpl); the originals stay alive
  // until the end so that no address is reused while the map is read.
  std::map<const void*, std::pair<at::Tensor, at::Tensor>> moved;
  auto move = [&](at::Tensor& t) {
    if (!t.defined()) return;
    auto [it, fresh] = moved.try_emplace(t.unsafeGetTensorImpl());
    if (fresh) it->second = {t, t.detach().to(device)};
    t = it->second.second;
  };
  auto move_slots = [&](Module& m) { m.visit_slots([&](const std::string&, Module::ParamSlot& s) { move(*s.tensor); }); };
  move_slots(*model_);
  for (auto& [_, in] : inputs_) move_slots(*in);
  for (auto& [_, saved] : saved_modules_) {
    for (auto& t : saved.original) move(t);
    for (auto& [__, copy] : saved.copies)
      for (auto& t : copy) move(t);
  }
  apply_state();  // the trainable copies' slots and every requires_grad flag, on the moved tensors
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
  // Trainable copies: the first active adapter's copy, or the original.
  for (auto& [path, saved] : saved_modules_) {
    const std::vector<at::Tensor>* use = &saved.original;
    if (!disabled_)
      for (const auto& act : active_)
        if (auto it = saved.copies.find(act); it != saved.copies.end()) {
          use = &it->second;
          break;
        }
    for (size_t i = 0; i < saved.slots.size(); ++i) *saved.slots[i] = (*use)[i];
  }
  // The input adapter of the first active adapter that has one.
  model_->input_adapter = nullptr;
  if (!disabled_)
    for (const auto& act : active_)
      if (auto* in = input_adapter(act)) {
        model_->input_adapter = in;
        break;
      }
  // requires_grad: nothing but the active adapters' parameters, their copies and, per
  // LoRA's bias setting, biases.
  for (auto& [_, t] : model_->named_parameters())
    if (t.requires_grad()) t.set_requires_grad(false);
  for (auto& [_, saved] : saved_modules_) {
    for (auto& t : saved.original) t.set_requires_grad(false);
    for (auto& [__, copy] : saved.copies)
      for (auto& t : copy) t.set_requires_grad(false);
  }
  for (auto& [_, in] : inputs_)
    in->visit_slots([](const std::string&, Module::ParamSlot& s) { s.tensor->set_requires_grad(false); });
  // A composition trains its own tensors; its adapters stay frozen unless it says otherwise.
  if (composition_)
    for (auto& l : composition_->layers)
      for (auto* t : l.composition->trainable_slots()) t->set_requires_grad(true);
  if (composition_ && composition_->config.trainable_weights) composition_->weights.set_requires_grad(true);
  const bool adapters_train = !composition_ || composition_->config.train_adapters;
  for (const auto& act : adapters_train ? active_ : std::vector<std::string>{}) {
    for (auto& a : attachments_[act])
      for (auto* t : a.layer->adapter(act)->trainable_slots()) t->set_requires_grad(true);
    for (auto& [_, saved] : saved_modules_)
      if (auto it = saved.copies.find(act); it != saved.copies.end())
        for (auto& t : it->second) t.set_requires_grad(true);
    if (auto* in = input_adapter(act))
      for (auto* t : in->trainable_slots()) t->set_requires_grad(true);
    const auto trained = configs_[act]->trained_base_parameters(*model_, adapted_paths(act));
    for (auto& [n, t] : model_->named_parameters())
      if (std::find(trained.begin(), trained.end(), n) != trained.end()) t.set_requires_grad(true);
  }
}

void PeftModel::set_adapter(const std::vector<std::string>& names) {
  for (const auto& n : names)
    if (!configs_.count(n)) throw std::invalid_argument("no adapter named '" + n + "'");
  for (const auto& [n, list] : attachments_)
    for (const auto& a : list)
      if (auto* ad = a.layer->adapter(n); ad && ad->merged())
        throw std::logic_error("unmerge adapters before switching (adapter '" + n + "' is merged)");
  if (composition_) clear_composition();
  active_ = names;
  apply_state();
}

std::vector<std::string> PeftModel::adapters() const {
  std::vector<std::string> out;
  for (const auto& [n, _] : configs_) out.push_back(n);
  return out;
}

const AdapterConfig& PeftModel::config(const std::string& name) const {
  auto it = configs_.find(name);
  if (it == configs_.end()) throw std::invalid_argument("no adapter named '" + name + "'");
  return *it->second;
}

void PeftModel::delete_adapter(const std::string& name) {
  config(name);
  if (composition_ && std::count(composition_->config.adapters.begin(), composition_->config.adapters.end(), name))
    clear_composition();
  for (auto& a : attachments_[name]) {
    if (a.layer->adapter(name)->merged()) a.layer->adapter(name)->unmerge();
    a.layer->detach(name);
  }
  attachments_.erase(name);
  configs_.erase(name);
  inputs_.erase(name);
  for (auto& [_, saved] : saved_modules_) {
    saved.copies.erase(name);
    saved.infix.erase(name);
  }
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
  if (composition_)
    throw std::logic_error("a '" + composition_->config.kind + "' composition is set; clear_composition() before merging");
  for (const auto& act : active_)
    if (!configs_[act]->mergeable())
      throw std::logic_error("adapter '" + act + "' (" + configs_[act]->peft_type() + ") cannot be merged into the weights");
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
    for (auto* t : saved.slots) *t = t->detach();
  saved_modules_.clear();
  inputs_.clear();
  model_->input_adapter = nullptr;
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
    // A 4-bit weight's packed codes (uint8, two per byte) count twice, as PEFT counts
    // bnb's Params4bit.
    all += t.scalar_type() == at::kByte ? 2 * t.numel() : t.numel();
    if (t.requires_grad()) trainable += t.numel();
  }
  // HF PEFT also counts the originals and the inactive copies of modules_to_save.
  for (const auto& [_, saved] : saved_modules_) {
    int64_t n = 0;
    for (const auto& t : saved.original) n += t.numel();
    all += n * static_cast<int64_t>(saved.copies.size());
  }
  for (const auto& [name, list] : attachments_)
    all += configs_.at(name)->unsaved_parameters_per_layer() * static_cast<int64_t>(list.size());
  // Prompt encoders are modules of HF's PeftModel too.
  for (const auto& [_, in] : inputs_)
    in->visit_slots([&](const std::string&, Module::ParamSlot& s) {
      all += s.tensor->numel();
      if (s.tensor->requires_grad()) trainable += s.tensor->numel();
    });
  for (const auto& [_, t] : composition_state_dict()) {
    all += t.numel();
    if (t.requires_grad()) trainable += t.numel();
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
  for (const auto& [_, in] : inputs_)
    in->visit_slots([&](const std::string&, Module::ParamSlot& s) {
      if (s.tensor->requires_grad()) out.push_back(*s.tensor);
    });
  for (const auto& [_, t] : composition_state_dict())
    if (t.requires_grad()) out.push_back(t);
  return out;
}

std::set<std::string> PeftModel::adapted_paths(const std::string& adapter) const {
  std::set<std::string> paths;
  if (auto it = attachments_.find(adapter); it != attachments_.end())
    for (const auto& a : it->second) paths.insert(a.path);
  return paths;
}

void PeftModel::train(bool on) {
  for (auto& [_, list] : attachments_)
    for (auto& a : list)
      for (const auto& n : a.layer->adapter_names()) a.layer->adapter(n)->training = on;
  for (auto& [_, in] : inputs_) in->training = on;
}

at::Tensor PeftModel::aux_loss(const at::Tensor& labels) const {
  at::Tensor total;
  for (const auto& act : active_) {
    auto it = attachments_.find(act);
    if (it == attachments_.end() || disabled_) continue;
    at::Tensor sum;
    int64_t n = 0;
    for (const auto& a : it->second)
      if (at::Tensor l = a.layer->adapter(act)->aux_loss(); l.defined()) {
        sum = sum.defined() ? sum + l : l;
        ++n;
      }
    if (n > 0) total = total.defined() ? total + sum / static_cast<double>(n) : sum / static_cast<double>(n);
  }
  // The active input adapter's (ShadowPEFT's shadow-head loss).
  if (!disabled_ && model_->input_adapter)
    if (at::Tensor l = model_->input_adapter->aux_loss(labels); l.defined()) total = total.defined() ? total + l : l;
  // The model's own (an MoE router's load-balancing loss), adapters or not.
  if (at::Tensor m = model_->aux_loss(); m.defined()) total = total.defined() ? total + m : m;
  return total;
}

void PeftModel::begin_training(int64_t total_steps) {
  for (const auto& act : active_) configs_.at(act)->begin_training(total_steps);
}

void PeftModel::after_optimizer_step(int64_t global_step) {
  for (const auto& act : active_) {
    AdapterConfig::AdaptedLayers layers;
    for (const auto& a : attachments_[act]) layers.emplace_back(a.path, a.layer->adapter(act));
    configs_.at(act)->after_optimizer_step(layers, global_step);
  }
}

// --- files ---------------------------------------------------------------------------

NamedTensors PeftModel::adapter_state_dict(const std::string& name) const {
  const std::string kPrefix = config(name).key_prefix();
  NamedTensors out;
  if (auto* in = input_adapter(name))
    for (auto& [k, t] : in->saved_tensors()) out.emplace_back(k, t.detach());
  // A layer parameter that is also a shared slot (UniLoRA's trainable θ_d, which every
  // layer registers) is filed once, under its shared key only.
  std::set<const at::Tensor*> shared_tensors;
  for (const auto& a : attachments_.at(name))
    for (const auto& s : a.layer->adapter(name)->shared_slots()) shared_tensors.insert(s.tensor);
  for (const auto& a : attachments_.at(name))
    a.layer->adapter(name)->visit_slots([&](const std::string& key, Module::ParamSlot& s) {
      if (!shared_tensors.count(s.tensor)) out.emplace_back(kPrefix + a.path + "." + key, *s.tensor);
    });
  std::set<std::string> shared;  // VeRA's projections: every layer names them, filed once
  for (const auto& a : attachments_.at(name))
    for (const auto& s : a.layer->adapter(name)->shared_slots())
      if (shared.insert(s.key).second) out.emplace_back(s.key, *s.tensor);
  // Trained biases, under the names HF PEFT's state dict gives them: a wrapped layer's
  // own parameters sit below "base_layer" there.
  const std::set<std::string> wrapped = adapted_paths(name);
  auto hf_name = [&](const std::string& n) {
    const auto dot = n.rfind('.');
    return wrapped.count(n.substr(0, dot)) ? n.substr(0, dot) + ".base_layer" + n.substr(dot) : n;
  };
  const auto trained = config(name).trained_base_parameters(*model_, wrapped);
  for (const auto& [n, t] : model_->named_parameters())
    if (std::find(trained.begin(), trained.end(), n) != trained.end()) out.emplace_back(kPrefix + hf_name(n), t);
  for (const auto& [path, saved] : saved_modules_) {
    auto it = saved.copies.find(name);
    if (it == saved.copies.end()) continue;
    for (size_t i = 0; i < saved.names.size(); ++i)
      out.emplace_back(kPrefix + path + "." + saved.infix.at(name) + saved.names[i], it->second[i]);
  }
  config(name).to_file_tensors(out);
  return out;
}

void PeftModel::save_adapter(const std::string& dir, const std::string& name) const {
  fs::create_directories(dir);
  auto cfg = config(name).clone();
  if (cfg->base_model_name_or_path.empty())
    cfg->base_model_name_or_path =
        model_->name_or_path.empty() ? model_->config().value("_name_or_path", std::string()) : model_->name_or_path;
  write_json_atomic((fs::path(dir) / "adapter_config.json").string(), cfg->to_json());
  save_safetensors((fs::path(dir) / "adapter_model.safetensors").string(), adapter_state_dict(name),
                   {{"format", "pt"}});
  // A prompt encoder in training (P-tuning, prefix projection) is saved as its output, as
  // HF PEFT does; its own weights go beside it, so training can go on from the folder
  // (checkpoints, init_adapter). HF PEFT ignores the extra file.
  const fs::path encoder = fs::path(dir) / kPromptEncoderFile;
  fs::remove(encoder);
  if (auto* in = input_adapter(name); in && !config(name).inference_mode) {
    NamedTensors weights;
    in->visit_slots([&](const std::string& key, Module::ParamSlot& s) { weights.emplace_back(key, s.tensor->detach()); });
    save_safetensors(encoder.string(), weights, {{"format", "pt"}});
  }
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
  std::vector<std::string> unknown;
  auto cfg = parse_adapter_config(j, cfg_path.string(), &unknown);
  for (const auto& k : unknown) std::cerr << "warning: " << cfg_path.string() << ": unknown key '" << k << "' kept\n";
  // Shapes come from the config; values from the file. Saved prompt encoders are their
  // outputs, so build in inference mode, unless the encoder's own weights were saved
  // too (our training folders). PiSSA/OLoRA must not rewrite the base while loading, so
  // build LoRA with the plain init.
  const fs::path enc_path = fs::path(dir) / kPromptEncoderFile;
  const bool with_encoder = fs::exists(enc_path);
  cfg->inference_mode = !with_encoder;
  add_adapter(name, *cfg->for_loading());
  const auto mts = configs_[name]->targets.modules_to_save;
  configs_[name] = std::move(cfg);
  configs_[name]->targets.modules_to_save = mts;

  const std::string kPrefix = configs_[name]->key_prefix();
  SafetensorsFile file(st_path.string());
  std::map<std::string, at::Tensor*> expected;
  std::map<std::string, std::vector<int64_t>> shapes;
  std::set<const at::Tensor*> shared_tensors;  // filed under their shared keys only
  for (auto& a : attachments_[name])
    for (const auto& s : a.layer->adapter(name)->shared_slots()) {
      expected[s.key] = s.tensor;
      shapes[s.key] = s.tensor->sizes().vec();
      shared_tensors.insert(s.tensor);
    }
  for (auto& a : attachments_[name])
    a.layer->adapter(name)->visit_slots([&](const std::string& key, Module::ParamSlot& s) {
      if (shared_tensors.count(s.tensor)) return;
      expected[kPrefix + a.path + "." + key] = s.tensor;
      shapes[kPrefix + a.path + "." + key] = s.shape;
    });
  for (auto& [path, saved] : saved_modules_) {
    auto it = saved.copies.find(name);
    if (it == saved.copies.end()) continue;
    for (size_t i = 0; i < saved.names.size(); ++i) {
      const std::string key = kPrefix + path + "." + saved.infix.at(name) + saved.names[i];
      expected[key] = &it->second[i];
      shapes[key] = it->second[i].sizes().vec();
    }
  }
  std::set<std::string> seen;
  if (auto* in = input_adapter(name); in && with_encoder) {
    // The encoder's weights; the output saved for HF PEFT is derived from them.
    SafetensorsFile enc(enc_path.string());
    in->visit_slots([&](const std::string& key, Module::ParamSlot& s) {
      if (!enc.contains(key)) throw std::runtime_error(enc_path.string() + ": missing tensor '" + key + "'");
      assign_checked(enc.get(key), enc_path.string(), key, s.tensor, s.shape, "the config makes");
    });
    for (const auto& [k, _] : in->saved_tensors()) seen.insert(k);
  } else if (in) {
    in->visit_slots([&](const std::string& key, Module::ParamSlot& s) {
      expected[key] = s.tensor;
      shapes[key] = s.shape;
    });
  }
  // The file's tensors (views of it) under the adapter's keys: most methods file their
  // slots as they are; a method's config rewrites what it files in another form.
  NamedTensors file_tensors;
  for (const auto& key : file.names())
    if (!seen.count(key)) file_tensors.emplace_back(key, file.get(key));  // not an encoder's output
  try {
    read_file_tensors(*configs_[name], file_tensors);
  } catch (const std::exception& e) {
    throw std::runtime_error(st_path.string() + ": " + e.what());
  }
  std::vector<std::string> unexpected;
  for (const auto& [key, tensor] : file_tensors) {
    auto it = expected.find(key);
    if (it == expected.end()) {
      // Base parameters an adapter may carry (trained biases; the embedding HF PEFT
      // saves beside an embedding LoRA) replace the base model's own.
      if (key.rfind(kPrefix, 0) == 0) {
        std::string n = key.substr(kPrefix.size());
        if (auto p = n.find(".base_layer."); p != std::string::npos) n.erase(p, 11);
        for (auto& [pn, t] : model_->named_parameters())
          if (pn == n) {
            if (t.sizes() != tensor.sizes())
              throw std::runtime_error(st_path.string() + ": '" + key + "' has shape " + c10::str(tensor.sizes()) +
                                       " but the base has " + c10::str(t.sizes()));
            c10::NoGradGuard g;
            t.copy_(tensor);
            seen.insert(key);
          }
        if (seen.count(key)) continue;
      }
      unexpected.push_back(key);
      continue;
    }
    assign_checked(tensor, st_path.string(), key, it->second, shapes[key], "the base model needs",
                   " (is this adapter for another base model, or another r?)");
    seen.insert(key);
  }
  std::vector<std::string> missing;
  for (const auto& [key, _] : expected)
    if (!seen.count(key)) missing.push_back(key);
  if (!missing.empty()) {
    // Keys that fit nothing and keys that were not found: most likely another model's adapter.
    const std::string base = configs_[name]->base_model_name_or_path;
    throw std::runtime_error(st_path.string() + ": missing tensor '" + missing.front() + "'" +
                             (missing.size() > 1 ? " and " + std::to_string(missing.size() - 1) + " more" : "") +
                             (unexpected.empty() ? ""
                                                 : "; " + std::to_string(unexpected.size()) +
                                                       " of its tensors fit no module of " + model_->type_name() +
                                                       " (e.g. '" + unexpected.front() + "')") +
                             (base.empty() ? "" : "; it was made for " + base));
  }
  for (const auto& key : unexpected)
    std::cerr << "warning: " << st_path.string() << ": unexpected key '" << key << "' ignored\n";
  apply_state();
}

void report_new_heads(const Model& model, const PeftModel* peft) {
  std::vector<std::string> bare;
  for (const auto& name : model.newly_initialized) {
    bool supplied = false;
    if (peft)
      for (const auto& [path, saved] : peft->saved_modules_)
        if (name.rfind(path + ".", 0) == 0 && !saved.copies.empty()) supplied = true;
    if (!supplied) bare.push_back(name);
  }
  if (!bare.empty())
    std::cerr << "note: " << model.type_name() << " head newly initialized (not in the checkpoint): " << bare.front()
              << (bare.size() > 1 ? ", ..." : "") << "; it must be trained, or come from an adapter's modules_to_save\n";
}

}  // namespace peft
