// Loading a model (a Hugging Face folder, or a GGUF file) and saving one as a Hugging Face
// folder.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>

#include "io/checkpoint_reader.h"
#include "io/expert_keys.h"
#include "io/split_keys.h"
#include "io/load_4bit.h"
#include "peft/layers.h"
#include "peft/model.h"
#include "peft/safetensors.h"
#include "util/atomic_file.h"
#include "util/cuda_backend.h"
#include "util/json_file.h"

namespace fs = std::filesystem;

namespace peft {

namespace {

// Buffers that transformers checkpoints sometimes carry and the models recompute.
bool ignorable(const std::string& key) {
  // Buffers transformers 4 saved (GPT-2's and GPT-NeoX's causal masks, RoPE frequencies).
  for (const char* s : {".attn.bias", ".attn.masked_bias", ".attention.bias", ".attention.masked_bias", "position_ids",
                        "rotary_emb.inv_freq"})
    if (key.size() >= std::strlen(s) && key.compare(key.size() - std::strlen(s), std::string::npos, s) == 0)
      return true;
  return false;
}

}  // namespace

std::shared_ptr<Model> load_model(const std::string& path, const LoadOptions& opts) {
  std::optional<at::Device> device;  // checked before anything is read
  if (opts.device && *opts.device != "cpu") device = usable_device(*opts.device);
  const ModelPath where = resolve_model_path(path);
  const auto ck = with_split_keys(with_stacked_experts(open_checkpoint(where)));
  auto config = ck->config();
  const std::string config_name = where.gguf.empty() ? (fs::path(where.folder) / "config.json").string() : where.gguf;
  if (!opts.architecture.empty()) config["architectures"] = {opts.architecture};
  if (!opts.labels.empty() || opts.num_labels > 0) {
    // Class names: as given, else the config's own when it has that many, else LABEL_i.
    const int64_t n = opts.labels.empty() ? opts.num_labels : static_cast<int64_t>(opts.labels.size());
    const bool keep = opts.labels.empty() && config.contains("id2label") && config["id2label"].is_object() &&
                      static_cast<int64_t>(config["id2label"].size()) == n;
    if (!keep) {
      nlohmann::json id2label = nlohmann::json::object(), label2id = nlohmann::json::object();
      for (int64_t i = 0; i < n; ++i) {
        const std::string name = opts.labels.empty() ? "LABEL_" + std::to_string(i) : opts.labels[i];
        id2label[std::to_string(i)] = name;
        label2id[name] = i;
      }
      config["id2label"] = id2label;
      config["label2id"] = label2id;
    }
  }
  auto model = build_model(config, config_name);
  const std::optional<Load4bit> plan = plan_4bit(config, opts, config_name);
  std::map<std::string, Linear*> four_bit;  // weight name -> layer stored 4-bit
  if (plan) four_bit = layers_to_quantize(*model, *plan);

  // The model's own names, and the checkpoint key that supplies each.
  std::set<std::string> expected;
  model->visit_slots([&](const std::string& name, Module::ParamSlot&) { expected.insert(name); });
  const std::string prefix = model->base_model_prefix();
  std::map<std::string, std::string> source;  // model name -> checkpoint key
  std::vector<std::string> unexpected;
  const std::vector<std::string> all_keys = ck->keys();
  for (const auto& key : all_keys) {
    if (plan && is_quant_state_key(key)) continue;  // read with its 4-bit weight
    std::string k = model->name_for_checkpoint_key(key);
    std::string name;
    if (expected.count(k)) name = k;
    else if (!prefix.empty() && expected.count(prefix + "." + k)) name = prefix + "." + k;
    else if (!prefix.empty() && k.rfind(prefix + ".", 0) == 0 && expected.count(k.substr(prefix.size() + 1)))
      name = k.substr(prefix.size() + 1);
    if (name.empty()) {
      if (!ignorable(key)) unexpected.push_back(key);
      continue;
    }
    source[name] = key;
  }
  const std::set<std::string> key_set(all_keys.begin(), all_keys.end());
  const auto tied = model->tied_parameter_names();
  const auto heads = model->head_parameter_names();
  const at::ScalarType dtype = opts.dtype.value_or(at::kFloat);
  auto gen = at::detail::createCPUGenerator(opts.seed);
  model->visit_slots([&](const std::string& name, Module::ParamSlot& s) {
    auto it = source.find(name);
    if (it == source.end()) {
      if (std::find(tied.begin(), tied.end(), name) != tied.end()) return;
      if (s.buffer && s.tensor->defined()) {  // a buffer the checkpoint omits keeps its value
        *s.tensor = s.tensor->to(dtype);
        return;
      }
      if (!opts.architecture.empty() && std::find(heads.begin(), heads.end(), name) != heads.end()) {
        // transformers' init for heads: N(0, initializer_range) Linear weights, zero
        // biases, and a LayerNorm inside a head (ModernBERT's head.norm) at ones.
        const double std = model->config().value("initializer_range", 0.02);
        auto ends = [&](const char* suffix) {
          const size_t n = std::strlen(suffix);
          return name.size() > n && name.compare(name.size() - n, n, suffix) == 0;
        };
        *s.tensor = ends(".bias")          ? at::zeros(s.shape, at::kFloat).to(dtype)
                    : ends("norm.weight") ? at::ones(s.shape, at::kFloat).to(dtype)
                                          : at::empty(s.shape, at::kFloat).normal_(0.0, std, gen).to(dtype);
        model->newly_initialized.push_back(name);
        return;
      }
      throw std::runtime_error(ck->describe() + ": missing tensor '" + name + "' that " + model->type_name() +
                               " needs");
    }
    if (auto q = four_bit.find(name); q != four_bit.end()) {
      load_linear_4bit(*ck, key_set, it->second, *q->second, *plan, opts.dtype);
      return;
    }
    // Shapes are checked before anything is read (or dequantized).
    const auto shape = ck->shape(it->second);
    if (shape != s.shape)
      throw std::runtime_error(ck->file_of(it->second) + ": tensor '" + it->second + "' has shape " +
                               c10::str(at::IntArrayRef(shape)) + " but the config implies " +
                               c10::str(at::IntArrayRef(s.shape)) + " for '" + name + "'");
    at::Tensor t = ck->get(it->second);
    if (t.is_floating_point()) t = t.to(dtype);
    *s.tensor = t;
  });
  if (!unexpected.empty()) {
    std::cerr << "warning: " << ck->describe() << ": " << unexpected.size() << " tensor(s) not used by "
              << model->type_name() << ", e.g. '" << unexpected.front() << "'\n";
  }
  model->tie_weights();
  model->name_or_path = fs::absolute(where.gguf.empty() ? where.folder : where.gguf).lexically_normal().string();
  if (model->name_or_path.size() > 1 && model->name_or_path.back() == '/') model->name_or_path.pop_back();
  if (device) model->to(*device);
  return model;
}

namespace {

bool is_weights_file(const std::string& name) {
  auto ends = [&](const char* suffix) {
    const size_t n = std::strlen(suffix);
    return name.size() >= n && name.compare(name.size() - n, n, suffix) == 0;
  };
  return name == "model.safetensors" || name == "model.safetensors.index.json" || name.rfind("pytorch_model", 0) == 0 ||
         (name.rfind("model-", 0) == 0 && ends(".safetensors"));
}

}  // namespace

void check_save_target(const std::string& dir_str, bool overwrite) {
  const fs::path dir(dir_str);
  if (overwrite || !fs::is_directory(dir)) return;
  for (const auto& e : fs::directory_iterator(dir))
    if (is_weights_file(e.path().filename().string()))
      throw std::runtime_error(dir_str + ": already holds model weights (" + e.path().filename().string() +
                               "); choose an empty folder, or pass --force to replace them");
}

void save_pretrained(Model& model, const std::string& dir_str, bool overwrite) {
  const fs::path dir(dir_str);
  check_save_target(dir_str, overwrite);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw std::runtime_error(dir_str + ": cannot create the folder: " + ec.message());
  // 4-bit layers save their packed codes and bnb's state keys, as transformers does.
  const std::map<std::string, Linear*> four_bit = layers_4bit(model);
  NamedTensors tensors;
  for (auto& [n, t] : model.named_parameters()) {
    const std::string key = model.checkpoint_key_for_name(n);
    if (auto q = four_bit.find(n); q != four_bit.end()) append_4bit_tensors(*q->second, key, tensors);
    else tensors.emplace_back(key, t.detach());
  }
  for (auto& [n, t] : model.named_buffers()) tensors.emplace_back(model.checkpoint_key_for_name(n), t.detach());
  tensors = to_fused_keys(model.config(), to_per_expert_keys(model.config(), std::move(tensors)));
  save_safetensors((dir / "model.safetensors").string(), tensors, {{"format", "pt"}});
  nlohmann::json config = model.config();
  if (four_bit.empty()) config.erase("quantization_config");
  else config["quantization_config"] = quantization_config(model);
  write_json_atomic((dir / "config.json").string(), config);
  // A sharded checkpoint left beside the new file would be loaded instead of it.
  const auto index = dir / "model.safetensors.index.json";
  if (fs::exists(index)) {
    std::set<std::string> shards;
    try {
      const auto j = read_json_file(index.string());
      for (const auto& [key, file] : j.at("weight_map").items())
        if (file.is_string()) shards.insert(file.get<std::string>());
    } catch (const std::exception&) {
      // An unreadable index is removed all the same; its shards then stay, unused.
    }
    fs::remove(index);
    for (const auto& s : shards)
      if (s != "model.safetensors" && s.find('/') == std::string::npos && is_weights_file(s)) fs::remove(dir / s);
  }
  fsync_dir(dir.string());
}

}  // namespace peft
