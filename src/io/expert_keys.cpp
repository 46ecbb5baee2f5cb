#include "io/expert_keys.h"

#include <ATen/ATen.h>

#include <map>
#include <stdexcept>

#include "util/format.h"

namespace peft {

namespace {

// How a model type's checkpoints name the experts (transformers' conversion mapping):
// the per-expert names of the gate, up and down matrices, and a module renamed on load.
struct ExpertNaming {
  std::string gate, up, down;
  std::string saved_block, block;  // ".block_sparse_moe." <-> ".mlp." (Mixtral), or none
};

const ExpertNaming* naming_of(const nlohmann::json& config) {
  static const ExpertNaming kMixtral{"w1", "w3", "w2", ".block_sparse_moe.", ".mlp."};
  static const ExpertNaming kQwenMoe{"gate_proj", "up_proj", "down_proj", "", ""};
  if (!config.is_object() || !config.value("model_type", nlohmann::json()).is_string()) return nullptr;
  const std::string type = config["model_type"].get<std::string>();
  if (type == "mixtral") return &kMixtral;
  if (type == "qwen3_moe" || type == "qwen2_moe") return &kQwenMoe;
  return nullptr;
}

// The naming's block rename, where it has one (an empty `from` means none).
std::string rename_block(const std::string& s, const std::string& from, const std::string& to) {
  return from.empty() ? s : replace_all(s, from, to);
}

// "<prefix>.experts.<N>.<w>.weight" -> prefix, N, w (one of the naming's three).
bool parse_expert_key(const ExpertNaming& n, const std::string& key, std::string* prefix, int64_t* index,
                      std::string* w) {
  static const std::string kExperts = ".experts.", kWeight = ".weight";
  const size_t p = key.rfind(kExperts);
  if (p == std::string::npos || key.size() < kWeight.size() ||
      key.compare(key.size() - kWeight.size(), std::string::npos, kWeight) != 0)
    return false;
  const std::string mid = key.substr(p + kExperts.size(), key.size() - kWeight.size() - p - kExperts.size());
  const size_t dot = mid.find('.');
  if (dot == std::string::npos || dot == 0 || dot > 9) return false;
  const std::string num = mid.substr(0, dot), name = mid.substr(dot + 1);
  if (num.find_first_not_of("0123456789") != std::string::npos) return false;
  if (name != n.gate && name != n.up && name != n.down) return false;
  *prefix = key.substr(0, p + kExperts.size() - 1);  // "...mlp.experts"
  *index = std::stoll(num);
  *w = name;
  return true;
}

class StackedExperts : public CheckpointReader {
 public:
  StackedExperts(std::unique_ptr<CheckpointReader> inner, const ExpertNaming& n) : inner_(std::move(inner)) {
    // transformers' conversion: (Mixtral: ".block_sparse_moe." -> ".mlp.", then) the gate and
    // up matrices stacked (dim 0) and concatenated (dim 1) into gate_up_proj, down into down_proj.
    std::map<std::string, std::map<int64_t, std::map<std::string, std::string>>> experts;
    for (const auto& key : inner_->keys()) {
      const std::string k = rename_block(key, n.saved_block, n.block);
      std::string prefix, w;
      int64_t index;
      if (parse_expert_key(n, k, &prefix, &index, &w)) experts[prefix][index][w] = key;
      else renamed_[k] = key;
    }
    for (const auto& [prefix, by_index] : experts) {
      const int64_t count = by_index.rbegin()->first + 1;
      std::vector<std::string> gate, up, down;
      for (int64_t e = 0; e < count; ++e)
        for (const std::string* w : std::initializer_list<const std::string*>{&n.gate, &n.up, &n.down}) {
          auto it = by_index.find(e);
          if (it == by_index.end() || !it->second.count(*w))
            throw std::runtime_error(inner_->describe() + ": missing tensor '" +
                                     rename_block(prefix, n.block, n.saved_block) + "." + std::to_string(e) + "." + *w +
                                     ".weight' (the other experts of that layer have it)");
          (w == &n.gate ? gate : w == &n.up ? up : down).push_back(it->second.at(*w));
        }
      stacked_[prefix + ".gate_up_proj"] = {gate, up};
      stacked_[prefix + ".down_proj"] = {down, {}};
    }
  }
  const nlohmann::json& config() const override { return inner_->config(); }
  std::vector<std::string> keys() const override {
    std::vector<std::string> out;
    for (const auto& [k, _] : renamed_) out.push_back(k);
    for (const auto& [k, _] : stacked_) out.push_back(k);
    return out;
  }
  std::vector<int64_t> shape(const std::string& key) const override {
    auto it = stacked_.find(key);
    if (it == stacked_.end()) return inner_->shape(source(key));
    const auto& [first, second] = it->second;
    auto s = inner_->shape(first[0]);
    auto check = [&](const std::vector<std::string>& ks) {
      for (const auto& k : ks)
        if (inner_->shape(k) != s)
          throw std::runtime_error(inner_->file_of(k) + ": '" + k + "' differs in shape from '" + first[0] + "'");
    };
    check(first);
    if (!second.empty()) {
      check(second);
      s[0] *= 2;
    }
    s.insert(s.begin(), static_cast<int64_t>(first.size()));
    return s;
  }
  at::Tensor get(const std::string& key) const override {
    auto it = stacked_.find(key);
    if (it == stacked_.end()) return inner_->get(source(key));
    auto stack = [&](const std::vector<std::string>& ks) {
      std::vector<at::Tensor> ts;
      for (const auto& k : ks) ts.push_back(inner_->get(k));
      return at::stack(ts);
    };
    const auto& [first, second] = it->second;
    return second.empty() ? stack(first) : at::cat({stack(first), stack(second)}, 1);
  }
  std::string file_of(const std::string& key) const override {
    auto it = stacked_.find(key);
    return inner_->file_of(it == stacked_.end() ? source(key) : it->second.first[0]);
  }
  std::string describe() const override { return inner_->describe(); }

 private:
  const std::string& source(const std::string& key) const {
    auto it = renamed_.find(key);
    if (it == renamed_.end()) throw std::logic_error("no checkpoint key '" + key + "'");
    return it->second;
  }
  std::unique_ptr<CheckpointReader> inner_;
  std::map<std::string, std::string> renamed_;  // name shown -> key in the files
  // stacked name -> its per-expert keys (gate_up_proj: w1s, then w3s concatenated after)
  std::map<std::string, std::pair<std::vector<std::string>, std::vector<std::string>>> stacked_;
};

}  // namespace

std::unique_ptr<CheckpointReader> with_stacked_experts(std::unique_ptr<CheckpointReader> ck) {
  const ExpertNaming* n = naming_of(ck->config());
  if (!n) return ck;
  return std::make_unique<StackedExperts>(std::move(ck), *n);
}

NamedTensors to_per_expert_keys(const nlohmann::json& config, NamedTensors tensors) {
  const ExpertNaming* n = naming_of(config);
  if (!n) return tensors;
  NamedTensors out;
  auto ends = [](const std::string& s, const std::string& suffix) {
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), std::string::npos, suffix) == 0;
  };
  for (auto& [name, t] : tensors) {
    const std::string key = rename_block(name, n->block, n->saved_block);
    const bool gate_up = ends(key, ".experts.gate_up_proj"), down = ends(key, ".experts.down_proj");
    if (!gate_up && !down) {
      out.emplace_back(key, t);
      continue;
    }
    const std::string prefix = key.substr(0, key.rfind('.'));  // "...block_sparse_moe.experts"
    for (int64_t e = 0; e < t.size(0); ++e) {
      const std::string base = prefix + "." + std::to_string(e) + ".";
      if (down) {
        out.emplace_back(base + n->down + ".weight", t[e].contiguous());
      } else {
        const int64_t half = t.size(1) / 2;
        out.emplace_back(base + n->gate + ".weight", t[e].narrow(0, 0, half).contiguous());
        out.emplace_back(base + n->up + ".weight", t[e].narrow(0, half, half).contiguous());
      }
    }
  }
  return out;
}

}  // namespace peft
