// Where UniLoRA goes and what it shares (HF PEFT 0.21's UniLoraModel): Linear and Conv1D
// targets, LoRA's default table, one θ_d per adapter drawn before its first layer, and the
// index draw over all the adapter's layers (_assign_unilora_indices_and_scales).
#include <ATen/ATen.h>

#include <map>
#include <stdexcept>

#include "peft/unilora.h"
#include "tuners/config_fields.h"
#include "tuners/file_tensors.h"
#include "tuners/injection.h"
#include "tuners/target_match.h"
#include "tuners/unilora/numpy_generator.h"

namespace peft {

struct UniloraConfig::Plan {
  struct Layer {
    at::Tensor indices_A, indices_B, scales_A, scales_B;
  };
  std::shared_ptr<UniloraVector> vector = std::make_shared<UniloraVector>();
  std::map<std::string, Layer> layers;  // by target path
};

at::Tensor unilora_generate_index(int64_t count, int64_t theta_d_length, uint64_t proj_seed) {
  if (count < 0 || theta_d_length <= 0) throw std::invalid_argument("UNILORA: bad index draw size");
  NumpyGenerator rng(proj_seed);
  // Each entry base_count times, the remainder once each at random, all shuffled.
  const int64_t base_count = count / theta_d_length, remaining = count % theta_d_length;
  std::vector<int64_t> data;
  data.reserve(static_cast<size_t>(count));
  for (int64_t i = 0; i < theta_d_length; ++i) data.insert(data.end(), static_cast<size_t>(base_count), i);
  if (remaining > 0) {
    const auto extras = rng.choice_without_replacement(theta_d_length, remaining);
    data.insert(data.end(), extras.begin(), extras.end());
  }
  rng.shuffle(data);
  return at::tensor(data, at::TensorOptions(at::kLong));
}

void UniloraConfig::resolve(const Model& model) {
  if (targets.empty()) targets.target_list = default_targets(model, "UNILORA", lora_default_targets());
}

NamedModules UniloraConfig::layer_targets(Model& model) const {
  auto found = find_targets(model, targets, task_type);
  plan_ = std::make_shared<Plan>();
  // Every A [r, in] and B [out, r] in module order; layers UniLoRA cannot host are
  // refused by make_layer_adapter.
  std::vector<std::pair<std::string, std::pair<int64_t, int64_t>>> shapes;
  int64_t count = 0;
  for (const auto& [path, m] : found)
    if (auto* l = dynamic_cast<AdaptableLayer*>(m); l && l->kind() == LayerKind::kLinear) {
      shapes.push_back({path, {l->input_dim(), l->output_dim()}});
      count += r * (l->input_dim() + l->output_dim());
    }
  if (count == 0) return found;
  const auto index = unilora_generate_index(count, theta_d_length, static_cast<uint64_t>(proj_seed));
  // An entry used n times scales by 1/√n.
  const auto uses = at::bincount(index, {}, theta_d_length);
  auto inv_sqrt = at::zeros({theta_d_length}, at::kFloat);
  const auto used = uses > 0;
  inv_sqrt.index_put_({used}, uses.index({used}).to(at::kFloat).rsqrt());
  int64_t at_entry = 0;
  auto take = [&](int64_t rows, int64_t cols) {
    auto t = index.narrow(0, at_entry, rows * cols).view({rows, cols}).clone();
    at_entry += rows * cols;
    return t;
  };
  for (const auto& [path, io] : shapes) {
    Plan::Layer l;
    l.indices_A = take(r, io.first);
    l.indices_B = take(io.second, r);
    l.scales_A = inv_sqrt.index({l.indices_A});
    l.scales_B = inv_sqrt.index({l.indices_B});
    plan_->layers[path] = std::move(l);
  }
  return found;
}

std::shared_ptr<LayerAdapter> UniloraConfig::make_layer_adapter(const std::string& path, Module& m,
                                                                at::Generator& gen) const {
  auto* host = &linear_host("UNILORA", path, m, LinearHost::kLinearOrConv1D);
  if (!plan_ || !plan_->layers.count(path))
    throw std::logic_error("UNILORA: no indices for '" + path + "' (layer_targets draws them)");
  auto& theta = plan_->vector->theta_d;
  if (!theta.defined()) {  // HF's _init_unilora_theta_d: the first draw
    theta = at::empty({theta_d_length}, at::TensorOptions(at::kFloat));
    if (init_weights)
      theta.uniform_(-init_theta_d_bound, init_theta_d_bound, gen);
    else
      theta.normal_(0.0, 1.0, gen);
  }
  const auto& l = plan_->layers.at(path);
  const auto& w = *host->weight_tensor();
  // HF's update_scaling keeps the scales in the base weight's dtype.
  const auto scale_dtype = w.is_floating_point() ? w.scalar_type() : at::kFloat;
  const auto device = w.device();
  auto a = std::make_shared<UniloraLayer>(host, plan_->vector, l.indices_A.to(device), l.indices_B.to(device),
                                          l.scales_A.to(device, scale_dtype), l.scales_B.to(device, scale_dtype),
                                          unilora_dropout,
                                          save_indices ? key_prefix() + path + ".unilora_" : "");
  a->to(device);
  return a;
}

namespace {
// A save_indices file's indices must address θ_d: a bad one is named on load, not left to
// fail inside the first forward's gather.
[[maybe_unused]] const bool kUniloraIndicesChecked =
    register_file_tensors_reader("UNILORA", [](const AdapterConfig& c, FileTensors& tensors) {
      const int64_t length = static_cast<const UniloraConfig&>(c).theta_d_length;
      for (const auto& [key, t] : tensors) {
        if (!key.ends_with(".unilora_indices_A") && !key.ends_with(".unilora_indices_B")) continue;
        if (t.is_floating_point() || t.is_complex() || t.scalar_type() == at::kBool)
          throw std::runtime_error("UNILORA: '" + key + "' must hold integer indices, got " +
                                   std::string(c10::toString(t.scalar_type())));
        if (t.numel() > 0 && (t.min().item<int64_t>() < 0 || t.max().item<int64_t>() >= length))
          throw std::runtime_error("UNILORA: '" + key + "' holds indices outside theta_d's " + std::to_string(length) +
                                   " entries (" + std::to_string(t.min().item<int64_t>()) + " to " +
                                   std::to_string(t.max().item<int64_t>()) + ")");
      }
    });
}  // namespace

std::vector<std::string> UniloraConfig::trained_base_parameters(Model& model,
                                                                const std::set<std::string>& adapted) const {
  return bias_parameters(model, bias, ".unilora_", adapted);
}

}  // namespace peft
