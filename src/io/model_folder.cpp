// Loading a Hugging Face model folder: config.json plus one or many safetensors files.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>

#include "peft/model.h"
#include "peft/safetensors.h"
#include "util/atomic_file.h"
#include "util/json_file.h"

namespace fs = std::filesystem;

namespace peft {

namespace {

nlohmann::json read_json(const fs::path& p) { return read_json_file(p.string()); }

// Checkpoint key -> the file that holds it.
struct Checkpoint {
  std::map<std::string, std::shared_ptr<SafetensorsFile>> by_key;
  std::string describe;
};

Checkpoint open_checkpoint(const fs::path& dir) {
  Checkpoint ck;
  const auto index = dir / "model.safetensors.index.json";
  const auto single = dir / "model.safetensors";
  if (fs::exists(index)) {
    auto j = read_json(index);
    if (!j.contains("weight_map") || !j["weight_map"].is_object())
      throw std::runtime_error(index.string() + ": missing object 'weight_map'");
    std::map<std::string, std::shared_ptr<SafetensorsFile>> files;
    for (const auto& [key, file] : j["weight_map"].items()) {
      if (!file.is_string()) throw std::runtime_error(index.string() + ": weight_map['" + key + "'] is not a file name");
      const std::string name = file.get<std::string>();
      // Shards live in the folder itself: a path out of it is never followed.
      if (name.empty() || name.find('/') != std::string::npos || name.find('\\') != std::string::npos ||
          name == "." || name == "..")
        throw std::runtime_error(index.string() + ": weight_map['" + key + "'] = '" + name +
                                 "' is not a file name in the model folder");
      auto& f = files[name];
      if (!f) f = std::make_shared<SafetensorsFile>((dir / name).string());
      if (!f->contains(key))
        throw std::runtime_error(index.string() + ": maps '" + key + "' to " + name + ", which has no such tensor");
      ck.by_key[key] = f;
    }
    ck.describe = index.string();
  } else if (fs::exists(single)) {
    auto f = std::make_shared<SafetensorsFile>(single.string());
    for (const auto& n : f->names()) ck.by_key[n] = f;
    ck.describe = single.string();
  } else {
    throw std::runtime_error(dir.string() + ": no model.safetensors or model.safetensors.index.json "
                             "(pytorch_model.bin checkpoints are not supported; convert them to safetensors)");
  }
  return ck;
}

// Buffers that transformers checkpoints sometimes carry and the models recompute.
bool ignorable(const std::string& key) {
  for (const char* s : {".attn.bias", ".attn.masked_bias", "position_ids", "rotary_emb.inv_freq"})
    if (key.size() >= std::strlen(s) && key.compare(key.size() - std::strlen(s), std::string::npos, s) == 0)
      return true;
  return false;
}

}  // namespace

std::shared_ptr<Model> load_model(const std::string& dir_str, const LoadOptions& opts) {
  const fs::path dir(dir_str);
  if (!fs::is_directory(dir)) throw std::runtime_error(dir_str + ": not a directory");
  const auto config_path = dir / "config.json";
  auto config = read_json(config_path);
  if (!opts.architecture.empty()) {
    config["architectures"] = {opts.architecture};
    if (opts.num_labels > 0) {
      nlohmann::json id2label;
      for (int64_t i = 0; i < opts.num_labels; ++i) id2label[std::to_string(i)] = "LABEL_" + std::to_string(i);
      config["id2label"] = id2label;
    }
  }
  auto model = build_model(config, config_path.string());
  Checkpoint ck = open_checkpoint(dir);

  // The model's own names, and the checkpoint key that supplies each.
  std::set<std::string> expected;
  model->visit_slots([&](const std::string& name, Module::ParamSlot&) { expected.insert(name); });
  const std::string prefix = model->base_model_prefix();
  std::map<std::string, std::string> source;  // model name -> checkpoint key
  std::vector<std::string> unexpected;
  for (const auto& [key, _] : ck.by_key) {
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
  const auto tied = model->tied_parameter_names();
  const auto heads = model->head_parameter_names();
  const at::ScalarType dtype = opts.dtype.value_or(at::kFloat);
  auto gen = at::detail::createCPUGenerator(opts.seed);
  std::vector<std::string> initialized;
  model->visit_slots([&](const std::string& name, Module::ParamSlot& s) {
    auto it = source.find(name);
    if (it == source.end()) {
      if (std::find(tied.begin(), tied.end(), name) != tied.end()) return;
      if (!opts.architecture.empty() && std::find(heads.begin(), heads.end(), name) != heads.end()) {
        // transformers' init for Linear heads: N(0, initializer_range) weights, zero bias.
        const double std = model->config().value("initializer_range", 0.02);
        *s.tensor = name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0
                        ? at::zeros(s.shape, at::kFloat).to(dtype)
                        : at::empty(s.shape, at::kFloat).normal_(0.0, std, gen).to(dtype);
        initialized.push_back(name);
        return;
      }
      throw std::runtime_error(ck.describe + ": missing tensor '" + name + "' that " + model->type_name() +
                               " needs");
    }
    auto& file = ck.by_key.at(it->second);
    at::Tensor t = file->get(it->second);
    if (t.sizes().vec() != s.shape)
      throw std::runtime_error(file->path() + ": tensor '" + it->second + "' has shape " + c10::str(t.sizes()) +
                               " but config.json implies " + c10::str(at::IntArrayRef(s.shape)) + " for '" + name +
                               "'");
    if (t.is_floating_point()) t = t.to(dtype);
    *s.tensor = t;
  });
  if (!unexpected.empty()) {
    std::cerr << "warning: " << ck.describe << ": " << unexpected.size() << " tensor(s) not used by "
              << model->type_name() << ", e.g. '" << unexpected.front() << "'\n";
  }
  if (!initialized.empty())
    std::cerr << "note: " << model->type_name() << " head newly initialized (not in the checkpoint): "
              << initialized.front() << (initialized.size() > 1 ? ", ..." : "")
              << "; it must be trained, or come from an adapter's modules_to_save\n";
  model->tie_weights();
  model->name_or_path = fs::absolute(dir).lexically_normal().string();
  if (model->name_or_path.size() > 1 && model->name_or_path.back() == '/') model->name_or_path.pop_back();
  if (opts.device && *opts.device != "cpu") {
    const at::Device device(*opts.device);  // throws on a malformed name
    if (device.is_cuda() && !at::hasCUDA())
      throw std::runtime_error("device '" + *opts.device + "': this machine has no usable CUDA GPU (or torch was "
                               "built without CUDA)");
    model->to(device);
  }
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
  NamedTensors tensors;
  for (auto& [n, t] : model.named_parameters()) tensors.emplace_back(model.checkpoint_key_for_name(n), t.detach());
  save_safetensors((dir / "model.safetensors").string(), tensors, {{"format", "pt"}});
  write_json_atomic((dir / "config.json").string(), model.config());
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
