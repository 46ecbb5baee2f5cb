// Where TinyLoRA goes and what it shares (HF PEFT 0.21's TinyLoraModel): Linear, Conv1D and
// Embedding targets, LoRA's default table, each target's index in module order (its
// projection seed) and its weight_tying group (the v it shares), one v per group drawn when
// the group's first layer is built.
#include <ATen/ATen.h>

#include <cmath>
#include <map>
#include <stdexcept>

#include "peft/tinylora.h"
#include "tuners/config_fields.h"
#include "tuners/injection.h"
#include "tuners/target_match.h"

namespace peft {

struct TinyLoraConfig::Plan {
  struct Target {
    int64_t index;
    std::shared_ptr<TinyLoraVector> vector;
  };
  std::map<std::string, Target> targets;  // by target path
};

namespace {

// Linear, Conv1D and Embedding layers with a weight: what HF's _build_target_key_mapping counts.
AdaptableLayer* tinylora_host(Module& m) {
  auto* host = dynamic_cast<AdaptableLayer*>(&m);
  if (!host || !host->weight_tensor()) return nullptr;
  return host->kind() == LayerKind::kLinear || host->kind() == LayerKind::kEmbedding ? host : nullptr;
}

}  // namespace

void TinyLoraConfig::resolve(const Model& model) {
  if (targets.empty()) targets.target_list = default_targets(model, "TINYLORA", lora_default_targets());
}

NamedModules TinyLoraConfig::layer_targets(Model& model) const {
  auto found = find_targets(model, targets, task_type);
  plan_ = std::make_shared<Plan>();
  std::vector<std::string> paths;
  for (const auto& [path, m] : found)
    if (tinylora_host(*m)) paths.push_back(path);
  const auto n = static_cast<int64_t>(paths.size());
  if (n == 0) return found;
  // Python's round() (half to even), as std::nearbyint in the default rounding mode.
  const int64_t num_groups =
      std::max<int64_t>(1, static_cast<int64_t>(std::nearbyint(static_cast<double>(n) * (1.0 - weight_tying))));
  const int64_t group_size = std::max<int64_t>(1, n / num_groups);
  std::map<int64_t, std::shared_ptr<TinyLoraVector>> groups;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t g = std::min(i / group_size, num_groups - 1);
    auto& vec = groups[g];
    if (!vec) {
      vec = std::make_shared<TinyLoraVector>();
      vec->key = "base_model.tinylora_v." + std::to_string(g);
    }
    plan_->targets[paths[static_cast<size_t>(i)]] = {i, vec};
  }
  return found;
}

std::shared_ptr<LayerAdapter> TinyLoraConfig::make_layer_adapter(const std::string& path, Module& m,
                                                                 at::Generator& gen) const {
  auto* host = tinylora_host(m);
  if (!host)
    throw std::invalid_argument("TINYLORA: target module '" + path + "' is a " + m.type_name() +
                                "; only Linear, Conv1D and Embedding layers are supported");
  if (!plan_ || !plan_->targets.count(path))
    throw std::logic_error("TINYLORA: no index for '" + path + "' (layer_targets numbers the targets)");
  // HF's _check_new_adapter_config: projections filed for all adapters or none.
  for (const auto& other : host->adapter_names())
    if (auto* t = dynamic_cast<TinyLoraLayer*>(host->adapter(other)); t && t->save_projection != save_projection)
      throw std::invalid_argument(
          "TINYLORA: save_projection must be the same for all adapters (projection tensors saved for all or none), "
          "but adapter '" + other + "' differs");
  const auto& target = plan_->targets.at(path);
  auto& v = target.vector->v;
  const auto device = host->weight_tensor()->device();
  if (!v.defined()) {  // the group's first layer: HF's draw in _create_and_replace
    v = at::zeros({u}, at::TensorOptions(at::kFloat));
    if (init_weights == "uniform") v.uniform_(-init_v_bound, init_v_bound, gen);
    v = v.to(device);
  }
  // HF seeds each layer's projection with projection_seed + its index (torch wraps to uint64).
  const uint64_t seed = projection_seed + static_cast<uint64_t>(target.index);
  auto a = std::make_shared<TinyLoraLayer>(host, *this, target.vector, seed, key_prefix() + path + ".");
  return a;
}

std::vector<std::string> TinyLoraConfig::trained_base_parameters(Model& model,
                                                                 const std::set<std::string>& adapted) const {
  return bias_parameters(model, bias, ".tinylora_", adapted);
}

}  // namespace peft
