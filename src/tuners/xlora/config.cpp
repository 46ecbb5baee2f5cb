// XLoraConfig: HF PEFT 0.21's XLoraConfig fields, the LoRA experts of `adapters`, the
// layers they adapt (numbered in the model's module order, as HF numbers its lora.Linear
// layers) and what each adapted layer and the classifier are made of.
#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <set>

#include "peft/layers.h"
#include "peft/lora.h"
#include "peft/safetensors.h"
#include "peft/xlora.h"
#include "tuners/config_fields.h"
#include "tuners/file_tensors.h"
#include "tuners/registry.h"
#include "tuners/xlora/keys.h"

namespace fs = std::filesystem;

namespace peft {

namespace {

const ojson& xlora_defaults() {
  static const auto j = ojson::parse(R"({
    "adapters": {}, "auto_mapping": null, "base_model_name_or_path": null, "enable_softmax": true,
    "enable_softmax_topk": false, "global_scaling_weight": 1.0, "hidden_size": null, "inference_mode": true,
    "layerwise_scalings": false, "peft_type": "XLORA", "peft_version": "0.21.2", "revision": null,
    "scaling_pass_value": 0.0, "softmax_temperature": 1.0, "task_type": null, "top_k_lora": null,
    "use_trainable_adapters": false, "xlora_depth": 1, "xlora_dropout_p": 0.2, "xlora_size": 2048
  })");
  return j;
}

// A relative folder is relative to the folder of the adapter_config.json being read
// (`where`) when the adapter is there, else to the working directory (where HF PEFT
// looks for it).
fs::path expert_dir(const std::string& folder, const std::string& where) {
  fs::path p(folder);
  if (p.is_relative() && fs::is_regular_file(where)) {
    const fs::path beside = fs::path(where).parent_path() / p;
    if (fs::is_directory(beside)) p = beside;
  }
  return fs::absolute(p).lexically_normal();
}

XLoraExpert read_expert(const std::string& name, const ojson& v, const std::string& where) {
  const std::string what = where + ": adapters." + name;
  if (!v.is_string()) throw std::runtime_error(what + " must be a LoRA adapter folder, got " + quote_json(v));
  XLoraExpert e;
  e.name = name;
  e.dir = expert_dir(v.get<std::string>(), where).string();
  // (HF's save_pretrained also writes "<i>/" folders beside the config, but in PEFT 0.21
  // they hold the classifier under the LoRA's name, not the LoRA: no stand-in for a moved one.)
  const fs::path cfg = fs::path(e.dir) / "adapter_config.json";
  if (!fs::is_regular_file(cfg)) throw std::runtime_error(what + ": no adapter_config.json in '" + e.dir + "'");
  if (!fs::is_regular_file(fs::path(e.dir) / "adapter_model.safetensors"))
    throw std::runtime_error(what + ": no adapter_model.safetensors in '" + e.dir + "'");
  const auto j = read_ordered_json_file(cfg.string());
  const std::string type = j.value("peft_type", std::string());
  if (type != "LORA")
    throw std::runtime_error(what + ": peft_type '" + type + "' is not LORA; X-LoRA mixes LoRA adapters");
  std::vector<std::string> unknown;  // HF PEFT writes keys we need not model
  auto lora = std::make_shared<LoraConfig>(LoraConfig::from_json(j, cfg.string(), &unknown));
  const std::string w = cfg.string();
  // HF's X-LoRA layers raise on DoRA; the rest is what its layers never compute.
  if (lora->use_dora) throw std::runtime_error(w + ": X-LoRA does not support DoRA experts ('use_dora')");
  if (lora->bias != "none") throw std::runtime_error(w + ": X-LoRA experts that train biases are not supported ('bias')");
  if (lora->lora_bias) throw std::runtime_error(w + ": X-LoRA experts with 'lora_bias' are not supported");
  if (!lora->targets.modules_to_save.empty())
    throw std::runtime_error(w + ": X-LoRA experts with modules_to_save are not supported ('modules_to_save')");
  if (!lora->trainable_token_indices.is_null())
    throw std::runtime_error(w + ": X-LoRA experts with trainable tokens are not supported ('trainable_token_indices')");
  if (lora->target_parameters)
    throw std::runtime_error(w + ": X-LoRA experts on parameters are not supported ('target_parameters')");
  e.lora = std::move(lora);
  return e;
}

}  // namespace

XLoraConfig XLoraConfig::from_json(const ojson& j, const std::string& where, std::vector<std::string>* unknown) {
  XLoraConfig c;
  c.where = where;
  ConfigFields f(j, xlora_defaults(), "XLORA", where, unknown, c);
  // X-LoRA has no targets of its own: the experts' decide.
  for (const char* key : {"target_modules", "exclude_modules", "layers_to_transform", "layers_pattern",
                          "modules_to_save"})
    if (j.contains(key) && !j[key].is_null())
      f.fail(std::string("'") + key + "' is not an X-LoRA field (the LoRA adapters in 'adapters' decide the layers)");
  if (!f.is_null("hidden_size")) c.hidden_size = f.get<int64_t>("hidden_size");
  if (c.hidden_size <= 0) f.fail("'hidden_size' must be a positive integer, got " + std::to_string(c.hidden_size));
  const ojson& ad = f.value("adapters");
  if (!ad.is_object() || ad.empty()) f.fail("'adapters' must map adapter names to LoRA adapter folders");
  // HF's order: the file's (HF writes its configs with sorted keys).
  for (const auto& [name, v] : ad.items()) c.adapters.push_back(read_expert(name, v, where));
  c.enable_softmax = f.get<bool>("enable_softmax");
  c.enable_softmax_topk = f.get<bool>("enable_softmax_topk");
  c.layerwise_scalings = f.get<bool>("layerwise_scalings");
  c.xlora_depth = f.get<int64_t>("xlora_depth");
  c.xlora_size = f.get<int64_t>("xlora_size");
  c.xlora_dropout_p = f.get<double>("xlora_dropout_p");
  c.use_trainable_adapters = f.get<bool>("use_trainable_adapters");
  c.softmax_temperature = f.get<double>("softmax_temperature");
  if (!f.is_null("top_k_lora")) c.top_k_lora = f.get<int64_t>("top_k_lora");
  c.scaling_pass_value = f.get<double>("scaling_pass_value");
  c.global_scaling_weight = f.get<double>("global_scaling_weight");
  if (c.xlora_depth <= 0) f.fail("'xlora_depth' must be strictly positive, got " + std::to_string(c.xlora_depth));
  if (c.xlora_depth > 1 && c.xlora_size <= 0)
    f.fail("'xlora_size' must be a positive integer, got " + std::to_string(c.xlora_size));
  if (!(c.xlora_dropout_p >= 0.0 && c.xlora_dropout_p <= 1.0))
    f.fail("'xlora_dropout_p' must be in [0, 1], got " + std::to_string(c.xlora_dropout_p));
  if (!(std::isfinite(c.softmax_temperature) && c.softmax_temperature > 0))
    f.fail("'softmax_temperature' must be > 0, got " + std::to_string(c.softmax_temperature));
  if (c.top_k_lora && (*c.top_k_lora < 1 || *c.top_k_lora > c.n_classes()))
    f.fail("'top_k_lora' must be between 1 and the number of adapters (" + std::to_string(c.n_classes()) +
           "), got " + std::to_string(*c.top_k_lora));
  if (!std::isfinite(c.scaling_pass_value)) f.fail("'scaling_pass_value' must be finite");
  if (!std::isfinite(c.global_scaling_weight)) f.fail("'global_scaling_weight' must be finite");
  // HF loads adapter i as LoRA "<i>" and then activates the names of `adapters`: a name
  // that is no index fails in HF's forward (KeyError); a permutation of the indices runs,
  // column n applying the adapter loaded as the n-th name.
  const auto cols = c.column_experts();
  for (size_t n = 0; n < cols.size(); ++n)
    if (cols[n] < 0)
      f.fail("adapter name '" + c.adapters[n].name + "' must be an adapter index (\"0\" .. \"" +
             std::to_string(c.n_classes() - 1) + "\"): HF PEFT 0.21 loads the LoRA adapters under those names and "
             "cannot run an XLORA adapter whose 'adapters' are named otherwise ('adapters')");
  return c;
}

std::vector<int64_t> XLoraConfig::column_experts() const {
  std::vector<int64_t> out;
  for (const auto& e : adapters) {
    int64_t found = -1;
    for (int64_t i = 0; i < n_classes(); ++i)
      if (e.name == std::to_string(i)) found = i;
    out.push_back(found);
  }
  return out;
}

ojson XLoraConfig::to_json() const {
  ojson fields, ad = ojson::object();
  for (const auto& e : adapters) ad[e.name] = e.dir;
  fields["adapters"] = ad;
  fields["hidden_size"] = hidden_size;
  fields["enable_softmax"] = enable_softmax;
  fields["enable_softmax_topk"] = enable_softmax_topk;
  fields["layerwise_scalings"] = layerwise_scalings;
  fields["xlora_depth"] = xlora_depth;
  fields["xlora_size"] = xlora_size;
  fields["xlora_dropout_p"] = xlora_dropout_p;
  fields["use_trainable_adapters"] = use_trainable_adapters;
  fields["softmax_temperature"] = softmax_temperature;
  fields["top_k_lora"] = top_k_lora ? ojson(*top_k_lora) : ojson();
  fields["scaling_pass_value"] = scaling_pass_value;
  fields["global_scaling_weight"] = global_scaling_weight;
  ojson j = config_json(*this, xlora_defaults(), fields);
  // Never targets of its own (config_json adds the shared fields its defaults name).
  j.erase("modules_to_save");
  return j;
}

NamedModules XLoraConfig::layer_targets(Model& model) const {
  targeted_ = std::make_shared<std::vector<std::vector<std::string>>>();
  std::set<std::string> adapted;
  for (const auto& e : adapters) {
    LoraConfig lora = *e.lora;
    lora.resolve(model);
    auto& mine = targeted_->emplace_back();
    for (auto& [path, m] : lora.layer_targets(model)) {
      mine.push_back(path);
      adapted.insert(path);
    }
  }
  // HF numbers its lora.Linear layers in base.modules() order: transformers' registration
  // order, which is ours.
  NamedModules out;
  state_ = std::make_shared<XLoraState>();
  for (auto& [path, m] : model.named_modules()) {
    if (path.empty() || dynamic_cast<LayerAdapter*>(m) || !adapted.count(path)) continue;
    state_->layer_number[path] = static_cast<int64_t>(out.size());
    out.emplace_back(path, m);
  }
  state_->n_layers = static_cast<int64_t>(out.size());
  if (out.empty()) throw std::invalid_argument(where + ": the LoRA adapters in 'adapters' adapt no layer of " +
                                               model.type_name());
  return out;
}

namespace {

// One expert's factors on one layer, from its folder.
XLoraLayer::Expert expert_factors(const XLoraExpert& e, const std::string& path, const AdaptableLayer& host,
                                  const std::string& where) {
  XLoraLayer::Expert f;
  f.scaling = e.lora->scaling_for(path);
  f.dropout = e.lora->lora_dropout;
  const int64_t r = e.lora->rank_for(path), in = host.input_dim(), out = host.output_dim();
  const std::string file_path = (fs::path(e.dir) / "adapter_model.safetensors").string();
  SafetensorsFile file(file_path);
  auto take = [&](const std::string& suffix, const std::vector<int64_t>& want) {
    const std::string key = xlora::kExpertFilePrefix + path + "." + suffix;
    if (!file.contains(key))
      throw std::runtime_error(where + ": adapter '" + e.name + "' (" + file_path + ") has no tensor '" + key + "'");
    if (file.info(key).shape != want)
      throw std::runtime_error(where + ": adapter '" + e.name + "' (" + file_path + "): '" + key + "' has shape " +
                               c10::str(at::IntArrayRef(file.info(key).shape)) + " but the base model needs " +
                               c10::str(at::IntArrayRef(want)) + " (a LoRA adapter for another base model?)");
    return file.get(key).to(at::kFloat).clone().to(host.device());
  };
  f.A = take("lora_A.weight", {r, in});
  f.B = take("lora_B.weight", {out, r});
  return f;
}

}  // namespace

std::shared_ptr<LayerAdapter> XLoraConfig::make_layer_adapter(const std::string& path, Module& m,
                                                              at::Generator& gen) const {
  auto* host = dynamic_cast<AdaptableLayer*>(&m);
  if (!host || host->kind() != LayerKind::kLinear || host->weight_is_in_out())
    throw std::invalid_argument("XLORA: target module '" + path + "' is a " + m.type_name() +
                                "; X-LoRA here mixes LoRA adapters on Linear layers only");
  if (!state_ || !targeted_ || !state_->layer_number.count(path))
    throw std::logic_error("XLORA: make_layer_adapter('" + path + "') before layer_targets");
  std::vector<XLoraLayer::Expert> fs;
  for (size_t i = 0; i < adapters.size(); ++i) {
    const auto& mine = (*targeted_)[i];
    if (std::find(mine.begin(), mine.end(), path) != mine.end()) fs.push_back(expert_factors(adapters[i], path, *host, where));
    else fs.push_back({});  // this adapter leaves the layer alone
  }
  return std::make_shared<XLoraLayer>(host, *this, state_, state_->layer_number.at(path), std::move(fs));
}

std::shared_ptr<InputAdapter> XLoraConfig::make_input_adapter(Model& model, at::Generator& gen) const {
  if (!state_) throw std::logic_error("XLORA: make_input_adapter before layer_targets");
  const auto& cfg = model.config();
  for (const char* key : {"hidden_size", "n_embd", "d_model"})
    if (cfg.contains(key) && cfg[key].is_number_integer()) {
      if (cfg[key].get<int64_t>() != hidden_size)
        throw std::invalid_argument(where + ": 'hidden_size' is " + std::to_string(hidden_size) + " but " +
                                    model.type_name() + "'s hidden size is " + std::to_string(cfg[key].get<int64_t>()));
      break;
    }
  auto c = std::make_shared<XLoraClassifier>(*this, state_);
  c->initialize(gen);  // drawn on the CPU from the seeded generator, then moved
  c->to(model.device());
  return c;
}

void XLoraConfig::to_file_tensors(std::vector<std::pair<std::string, at::Tensor>>& tensors) const {
  std::erase_if(tensors, [](const auto& p) { return p.first.find("internal_xlora_classifier") == std::string::npos; });
}

namespace {

// Loading: HF's file holds the classifier; the experts' slots are filled from their
// folders (XLoraModel loads them there itself), under the keys the layers file them.
void read_experts(const AdapterConfig& c, FileTensors& tensors) {
  const auto& x = dynamic_cast<const XLoraConfig&>(c);
  // The classifier against the config first, in its terms (the generic check would only
  // say that a shape differs).
  int64_t last = -1;
  auto index_of = [](const std::string& key) -> int64_t {
    const auto rest = key.substr(xlora::kClassifierPrefix.size());
    const auto dot = rest.find('.');
    if (dot == 0 || dot == std::string::npos || rest.find_first_not_of("0123456789") != dot) return -1;
    return std::stoll(rest.substr(0, dot));
  };
  std::set<int64_t> present;
  for (const auto& [key, t] : tensors)
    if (key.rfind(xlora::kClassifierPrefix, 0) == 0) {
      last = std::max(last, index_of(key));
      if (key.ends_with(".weight")) present.insert(index_of(key));
    }
  // HF PEFT 0.21's save_pretrained leaves out the classifier's Linear layers whose index in
  // its Sequential is an adapter name ("layers.0.weight" with adapters "0", ...): its
  // adapter-name filter drops keys containing ".0.", ".1.", ... . Such a file cannot give
  // the classifier back (HF then keeps a random init).
  // (No classifier key at all: the classifier comes from our prompt_encoder.safetensors
  // beside a training save, or is missing altogether, which loading then names.)
  const int64_t step = x.xlora_dropout_p > 0 ? 3 : 2;
  for (int64_t k = 0; k < x.xlora_depth && !present.empty(); ++k)
    if (!present.count(k * step)) {
      const std::string key = xlora::kClassifierPrefix + std::to_string(k * step) + ".weight";
      throw std::runtime_error(
          "missing tensor '" + key + "' of the X-LoRA classifier (" + std::to_string(present.size()) + " of its " +
          std::to_string(x.xlora_depth) + " Linear layers are in the file; or a file for another xlora_depth / xlora_dropout_p). HF PEFT 0.21's " +
          "save_pretrained leaves out " +
          "the layers whose index is also an adapter name ('0', '1', ...), so an X-LoRA it saved cannot be restored; "
          "save the whole classifier (the state dict's 'internal_xlora_classifier' keys) into adapter_model.safetensors");
    }
  last = std::max(last, (x.xlora_depth - 1) * step);
  for (const auto& [key, t] : tensors) {
    if (key.rfind(xlora::kClassifierPrefix, 0) != 0 || !key.ends_with(".weight") || t.dim() != 2) continue;
    const int64_t i = index_of(key);
    if (i == 0 && t.size(1) != x.hidden_size)
      throw std::runtime_error("'" + key + "' has shape " + c10::str(t.sizes()) + ": a classifier of hidden size " +
                               std::to_string(t.size(1)) + ", but 'hidden_size' is " + std::to_string(x.hidden_size));
    if (i == last && !x.layerwise_scalings && t.size(0) != x.n_classes())
      throw std::runtime_error("'" + key + "' has shape " + c10::str(t.sizes()) + ": a classifier for " +
                               std::to_string(t.size(0)) + " adapters, but 'adapters' names " +
                               std::to_string(x.n_classes()));
  }
  for (size_t i = 0; i < x.adapters.size(); ++i) {
    const auto& e = x.adapters[i];
    SafetensorsFile file((fs::path(e.dir) / "adapter_model.safetensors").string());
    for (const auto& key : file.names()) {
      if (key.rfind(xlora::kExpertFilePrefix, 0) != 0) continue;
      for (const char* f : {"lora_A", "lora_B"}) {
        const std::string suffix = std::string(".") + f + ".weight";
        if (key.size() > suffix.size() && key.compare(key.size() - suffix.size(), suffix.size(), suffix) == 0) {
          const std::string path = key.substr(xlora::kExpertFilePrefix.size(),
                                              key.size() - suffix.size() - xlora::kExpertFilePrefix.size());
          tensors.emplace_back(xlora::expert_slot_key(path, f, static_cast<int64_t>(i)), file.get(key).clone());
        }
      }
    }
  }
}

[[maybe_unused]] const bool kXLoraRegistered = register_method<XLoraConfig>("XLORA");
[[maybe_unused]] const bool kXLoraReader = register_file_tensors_reader("XLORA", read_experts);

}  // namespace

}  // namespace peft
