#include "io/split_keys.h"

#include <ATen/ATen.h>

#include <map>
#include <stdexcept>

namespace peft {

namespace {

const char* const kFused = ".mlp.weights_in.";
const char* const kParts[2] = {".mlp.gate_proj.", ".mlp.up_proj."};

bool splits(const nlohmann::json& config) {
  if (!config.is_object() || !config.value("model_type", nlohmann::json()).is_string()) return false;
  const std::string type = config["model_type"].get<std::string>();
  return type == "dinov2" || type == "dinov2_with_registers";
}

std::string replaced(const std::string& key, const std::string& from, const std::string& to) {
  std::string k = key;
  k.replace(k.find(from), from.size(), to);
  return k;
}

class SplitKeys : public CheckpointReader {
 public:
  explicit SplitKeys(std::unique_ptr<CheckpointReader> ck) : inner_(std::move(ck)) {
    for (const auto& key : inner_->keys()) {
      if (key.find(kFused) == std::string::npos) {
        shown_[key] = {key, -1};
        continue;
      }
      for (int half = 0; half < 2; ++half) shown_[replaced(key, kFused, kParts[half])] = {key, half};
    }
  }
  const nlohmann::json& config() const override { return inner_->config(); }
  std::vector<std::string> keys() const override {
    std::vector<std::string> out;
    for (const auto& [k, _] : shown_) out.push_back(k);
    return out;
  }
  std::vector<int64_t> shape(const std::string& key) const override {
    const auto& [source, half] = find(key);
    auto s = inner_->shape(source);
    if (half < 0) return s;
    if (s.empty() || s[0] % 2 != 0)
      throw std::runtime_error(inner_->file_of(source) + ": '" + source +
                               "' holds gate_proj and up_proj stacked, so its first dimension must be even");
    s[0] /= 2;
    return s;
  }
  at::Tensor get(const std::string& key) const override {
    const auto& [source, half] = find(key);
    if (half < 0) return inner_->get(source);
    const at::Tensor t = inner_->get(source);
    const int64_t n = t.size(0) / 2;
    return t.narrow(0, half * n, n).contiguous();
  }
  std::string file_of(const std::string& key) const override { return inner_->file_of(find(key).first); }
  std::string describe() const override { return inner_->describe(); }

 private:
  const std::pair<std::string, int>& find(const std::string& key) const {
    auto it = shown_.find(key);
    if (it == shown_.end()) throw std::logic_error("no checkpoint key '" + key + "'");
    return it->second;
  }
  std::unique_ptr<CheckpointReader> inner_;
  std::map<std::string, std::pair<std::string, int>> shown_;  // key shown -> (key in the files, half or -1)
};

}  // namespace

std::unique_ptr<CheckpointReader> with_split_keys(std::unique_ptr<CheckpointReader> ck) {
  if (!splits(ck->config())) return ck;
  return std::make_unique<SplitKeys>(std::move(ck));
}

NamedTensors to_fused_keys(const nlohmann::json& config, NamedTensors tensors) {
  if (!splits(config)) return tensors;
  std::map<std::string, at::Tensor> ups;
  for (const auto& [name, t] : tensors)
    if (name.find(kParts[1]) != std::string::npos) ups[replaced(name, kParts[1], kFused)] = t;
  NamedTensors out;
  for (auto& [name, t] : tensors) {
    if (name.find(kParts[1]) != std::string::npos) continue;  // written with its gate half
    if (name.find(kParts[0]) == std::string::npos) {
      out.emplace_back(name, t);
      continue;
    }
    const std::string fused = replaced(name, kParts[0], kFused);
    auto up = ups.find(fused);
    if (up == ups.end()) throw std::logic_error("'" + name + "' has no up_proj beside it");
    out.emplace_back(fused, at::cat({t, up->second}, 0));
  }
  return out;
}

}  // namespace peft
