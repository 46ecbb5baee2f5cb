#include "io/checkpoint_reader.h"

#include <ATen/ATen.h>

#include <filesystem>
#include <map>

#include "peft/gguf.h"
#include "peft/gguf_llama.h"
#include "peft/safetensors.h"
#include "util/json_file.h"

namespace fs = std::filesystem;

namespace peft {

namespace {

bool has_suffix(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), std::string::npos, suffix) == 0;
}

// config.json plus model.safetensors, or shards listed by model.safetensors.index.json.
class SafetensorsCheckpoint : public CheckpointReader {
 public:
  explicit SafetensorsCheckpoint(const fs::path& dir) : config_(read_json_file((dir / "config.json").string())) {
    const auto index = dir / "model.safetensors.index.json";
    const auto single = dir / "model.safetensors";
    if (fs::exists(index)) {
      describe_ = index.string();
      const auto j = read_json_file(index.string());
      if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
        throw std::runtime_error(describe_ + ": missing object 'weight_map'");
      std::map<std::string, std::shared_ptr<SafetensorsFile>> files;
      for (const auto& [key, file] : j["weight_map"].items()) {
        if (!file.is_string()) throw std::runtime_error(describe_ + ": weight_map['" + key + "'] is not a file name");
        const std::string name = file.get<std::string>();
        // Shards live in the folder itself: a path out of it is never followed.
        if (name.empty() || name.find('/') != std::string::npos || name.find('\\') != std::string::npos ||
            name == "." || name == "..")
          throw std::runtime_error(describe_ + ": weight_map['" + key + "'] = '" + name +
                                   "' is not a file name in the model folder");
        auto& f = files[name];
        if (!f) f = std::make_shared<SafetensorsFile>((dir / name).string());
        if (!f->contains(key))
          throw std::runtime_error(describe_ + ": maps '" + key + "' to " + name + ", which has no such tensor");
        by_key_[key] = f;
      }
    } else if (fs::exists(single)) {
      describe_ = single.string();
      auto f = std::make_shared<SafetensorsFile>(single.string());
      for (const auto& n : f->names()) by_key_[n] = f;
    } else {
      throw std::runtime_error(dir.string() + ": no model.safetensors or model.safetensors.index.json "
                               "(pytorch_model.bin checkpoints are not supported; convert them to safetensors)");
    }
  }
  const nlohmann::json& config() const override { return config_; }
  std::vector<std::string> keys() const override {
    std::vector<std::string> out;
    for (const auto& [k, _] : by_key_) out.push_back(k);
    return out;
  }
  std::vector<int64_t> shape(const std::string& key) const override { return by_key_.at(key)->info(key).shape; }
  at::Tensor get(const std::string& key) const override { return by_key_.at(key)->get(key); }
  std::string file_of(const std::string& key) const override { return by_key_.at(key)->path(); }
  std::string describe() const override { return describe_; }

 private:
  nlohmann::json config_;
  std::map<std::string, std::shared_ptr<SafetensorsFile>> by_key_;
  std::string describe_;
};

// A llama-architecture GGUF file: transformers' config and names; each tensor is
// dequantized to float32 and its q/k rows put back in transformers' order when read.
class GgufCheckpoint : public CheckpointReader {
 public:
  explicit GgufCheckpoint(const std::string& path) : file_(path), ordered_config_(llama_config_from_gguf(file_.header())) {
    config_ = nlohmann::json::parse(ordered_config_.dump());
    for (const auto& t : file_.tensors())
      if (auto hf = llama_hf_name(t.name)) by_key_[*hf] = &t;
  }
  const nlohmann::json& config() const override { return config_; }
  std::vector<std::string> keys() const override {
    std::vector<std::string> out;
    for (const auto& [k, _] : by_key_) out.push_back(k);
    return out;
  }
  std::vector<int64_t> shape(const std::string& key) const override { return by_key_.at(key)->shape(); }
  at::Tensor get(const std::string& key) const override {
    const GgufTensorInfo& t = *by_key_.at(key);
    at::Tensor out = at::empty(t.shape(), at::kFloat);
    dequantize(t.type, file_.data(t).data(), t.n_elements, out.data_ptr<float>());
    if (const int64_t heads = llama_qk_heads(t.name, ordered_config_); heads > 0) {
      // Rows of a weight; single values of a bias.
      const bool vector = t.dims.size() == 1;
      llama_unpermute_qk(out.data_ptr(), vector ? t.n_elements : t.n_rows(),
                         sizeof(float) * static_cast<size_t>(vector ? 1 : t.dims[0]), heads);
    }
    return out;
  }
  std::string file_of(const std::string&) const override { return file_.path(); }
  std::string describe() const override { return file_.path(); }

 private:
  GgufFile file_;
  nlohmann::ordered_json ordered_config_;
  nlohmann::json config_;
  std::map<std::string, const GgufTensorInfo*> by_key_;
};

}  // namespace

ModelPath resolve_model_path(const std::string& path) {
  const fs::path p(path);
  if (fs::is_regular_file(p)) {
    if (!has_suffix(path, ".gguf"))
      throw std::runtime_error(path + ": a model is a folder (config.json + safetensors) or a .gguf file");
    return {p.parent_path().empty() ? "." : p.parent_path().string(), path};
  }
  if (!fs::is_directory(p)) throw std::runtime_error(path + ": no such model folder or .gguf file");
  if (fs::exists(p / "config.json")) return {path, ""};
  std::vector<std::string> ggufs;
  for (const auto& e : fs::directory_iterator(p))
    if (e.is_regular_file() && has_suffix(e.path().filename().string(), ".gguf")) ggufs.push_back(e.path().string());
  if (ggufs.size() == 1) return {path, ggufs.front()};
  if (ggufs.empty()) throw std::runtime_error(path + ": no config.json (and no .gguf file)");
  throw std::runtime_error(path + ": holds " + std::to_string(ggufs.size()) +
                           " .gguf files and no config.json; name the one to use");
}

std::unique_ptr<CheckpointReader> open_checkpoint(const ModelPath& path) {
  if (!path.gguf.empty()) return std::make_unique<GgufCheckpoint>(path.gguf);
  return std::make_unique<SafetensorsCheckpoint>(path.folder);
}

}  // namespace peft
