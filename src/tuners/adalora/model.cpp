// Where AdaLoRA goes and how it changes while training (HF PEFT's AdaLoraModel): one
// SVDLinear per target, sized by rank_pattern when saved weights are loaded; the masked
// ranks cut out of saved files; update_and_allocate after every optimizer step.
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <stdexcept>

#include "peft/adalora.h"
#include "peft/layers.h"
#include "tuners/adalora/rank_allocator.h"
#include "tuners/config_fields.h"
#include "tuners/injection.h"
#include "tuners/target_match.h"

namespace peft {

namespace {

// HF's TRANSFORMERS_MODELS_TO_ADALORA_TARGET_MODULES_MAPPING for our models.
const std::vector<std::pair<std::string, std::vector<std::string>>> kDefaultTargets = {
    {"t5", {"q", "k", "v", "o", "wi", "wo"}},
    {"mt5", {"q", "k", "v", "o", "wi_0", "wi_1", "wo"}},
    {"bart", {"q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"}},
    {"gpt2", {"c_attn"}},
    {"bloom", {"query_key_value"}},
    {"opt", {"q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"}},
    {"gptj", {"q_proj", "v_proj"}},
    {"gpt_neox", {"query_key_value"}},
    {"gpt_neo", {"q_proj", "v_proj"}},
    {"llama", {"q_proj", "v_proj"}},
    {"bert", {"query", "value"}},
    {"roberta", {"query", "key", "value", "dense"}},
    {"deberta-v2", {"query_proj", "key_proj", "value_proj", "dense"}},
    {"gpt_bigcode", {"c_attn"}},
    {"deberta", {"in_proj"}},
    {"gemma", {"q_proj", "v_proj"}},
    {"gemma2", {"q_proj", "v_proj"}},
    {"gemma3_text", {"q_proj", "v_proj"}},
    {"qwen2", {"q_proj", "v_proj"}},
    {"qwen3", {"q_proj", "v_proj"}}};

const std::string kFilePrefix = "base_model.model.";

}  // namespace

void AdaLoraConfig::resolve(const Model& model) {
  if (targets.empty()) targets.target_list = default_targets(model, "ADALORA", kDefaultTargets);
}

NamedModules AdaLoraConfig::layer_targets(Model& model) const {
  auto found = find_targets(model, targets, task_type);
  for (auto& [path, m] : found) linear_host("ADALORA", path, *m, LinearHost::kLinearOrConv1D);
  return found;
}

std::shared_ptr<LayerAdapter> AdaLoraConfig::make_layer_adapter(const std::string& path, Module& m,
                                                                at::Generator& gen) const {
  auto* host = &linear_host("ADALORA", path, m, LinearHost::kLinearOrConv1D);
  int64_t rank = init_r;
  double ranknum = static_cast<double>(init_r);
  // HF's resize_modules_by_rank_pattern: the kept ranks, still divided by init_r (none: 0).
  if (auto it = rank_pattern.find(path + ".lora_E"); size_by_rank_pattern_ && it != rank_pattern.end()) {
    rank = std::count(it->second.begin(), it->second.end(), true);
    if (rank == 0) ranknum = 0;
  }
  const double scaling = lora_alpha > 0 ? lora_alpha : static_cast<double>(rank);
  auto a = std::make_shared<AdaLoraLinear>(host, rank, scaling, ranknum, lora_dropout, orth_reg_weight);
  c10::NoGradGuard g;
  const auto f32 = at::TensorOptions(at::kFloat);
  if (init_lora_weights) {
    a->lora_A = at::empty({rank, host->input_dim()}, f32).normal_(0.0, 0.02, gen);
    a->lora_B = at::empty({host->output_dim(), rank}, f32).normal_(0.0, 0.02, gen);
  } else {  // HF's torch.randn, untouched
    a->lora_A = at::randn({rank, host->input_dim()}, gen, f32);
    a->lora_E = at::randn({rank, 1}, gen, f32);
    a->lora_B = at::randn({host->output_dim(), rank}, gen, f32);
  }
  a->to(host->weight_tensor()->device());
  return a;
}

std::vector<std::string> AdaLoraConfig::trained_base_parameters(Model& model, const std::set<std::string>& adapted) const {
  return bias_parameters(model, bias, ".lora_", adapted);
}

void AdaLoraConfig::to_file_tensors(std::vector<std::pair<std::string, at::Tensor>>& tensors) const {
  if (!has_rank_pattern) return;
  for (auto& [key, t] : tensors) {
    if (key.rfind(kFilePrefix, 0) != 0) continue;
    const auto dot = key.rfind('.');
    const std::string part = key.substr(dot + 1);
    if (part != "lora_A" && part != "lora_B" && part != "lora_E") continue;
    auto it = rank_pattern.find(key.substr(kFilePrefix.size(), dot - kFilePrefix.size()) + ".lora_E");
    if (it == rank_pattern.end()) continue;
    const auto& mask = it->second;
    const int64_t dim = part == "lora_B" ? 1 : 0;
    const int64_t kept = std::count(mask.begin(), mask.end(), true);
    if (t.size(dim) == kept) continue;  // already cut (a loaded adapter)
    if (t.size(dim) != static_cast<int64_t>(mask.size()))
      throw std::runtime_error("ADALORA: rank_pattern '" + it->first + "' has " + std::to_string(mask.size()) +
                               " entries but '" + key + "' has " + std::to_string(t.size(dim)) + " ranks");
    std::vector<int64_t> idx;
    for (size_t i = 0; i < mask.size(); ++i)
      if (mask[i]) idx.push_back(static_cast<int64_t>(i));
    t = t.detach().index_select(dim, at::tensor(idx, at::kLong).to(t.device())).contiguous();
  }
}

void AdaLoraConfig::begin_training(int64_t total_steps) {
  if (total_step <= 0) total_step = total_steps;  // peft train: the run's optimizer steps
  check_schedule("ADALORA config");
}

void AdaLoraConfig::after_optimizer_step(const AdaptedLayers& adapted, int64_t global_step) {
  RankAllocator::Layers layers;
  for (const auto& [path, a] : adapted) layers.emplace_back(path, static_cast<AdaLoraLinear*>(a));
  // Only a trained adapter allocates (HF: the one not in inference mode); a frozen one in
  // a composition keeps its ranks.
  if (layers.empty() || !layers.front().second->lora_E.requires_grad()) return;
  if (total_step <= 0) throw std::logic_error("ADALORA: total_step is unset (begin_training sets it)");
  if (!allocator_) allocator_ = std::make_shared<RankAllocator>(*this, layers);
  const int64_t final_start = total_step - tfinal;
  if (global_step < final_start) {
    allocator_->update_ipt(layers);
    const auto [budget, mask] = allocator_->budget_schedule(global_step);
    if (mask) {
      rank_pattern = allocator_->mask_to_budget(layers, budget);
      has_rank_pattern = true;
    }
  } else if (global_step == final_start) {
    // The final allocation: the target budget, kept from now on.
    rank_pattern = allocator_->mask_to_budget(layers, allocator_->budget_schedule(global_step).first);
    has_rank_pattern = true;
    allocator_->reset_ipt();
  } else if (has_rank_pattern) {
    mask_using_rank_pattern(layers, rank_pattern);
  }
}

}  // namespace peft
