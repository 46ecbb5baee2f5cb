// RankAllocator: HF PEFT's importance scores, budget schedule and masking, operation for
// operation (the same ATen reductions in the same order), so the masks come out as HF's.
#include "tuners/adalora/rank_allocator.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <cmath>
#include <stdexcept>

namespace peft {

RankAllocator::RankAllocator(const AdaLoraConfig& cfg, const Layers& layers)
    : tinit_(cfg.tinit), tfinal_(cfg.tfinal), total_step_(cfg.total_step), delta_t_(cfg.deltaT),
      beta1_(cfg.beta1), beta2_(cfg.beta2) {
  for (const auto& [_, l] : layers) init_bgt_ += l->rank();
  target_bgt_ = cfg.target_r * static_cast<int64_t>(layers.size());
}

std::pair<int64_t, bool> RankAllocator::budget_schedule(int64_t step) const {
  if (step <= tinit_) return {init_bgt_, false};                    // initial warmup
  if (step > total_step_ - tfinal_) return {target_bgt_, true};      // final fine-tuning
  // The budget decreases on a cubic schedule.
  const double mul_coeff = 1.0 - static_cast<double>(step - tinit_) / static_cast<double>(total_step_ - tfinal_ - tinit_);
  const auto budget = static_cast<int64_t>(static_cast<double>(init_bgt_ - target_bgt_) * std::pow(mul_coeff, 3) +
                                           static_cast<double>(target_bgt_));
  return {budget, step % delta_t_ == 0};
}

void RankAllocator::update_ipt(const Layers& layers) {
  c10::NoGradGuard g;
  for (const auto& [path, l] : layers)
    for (const auto& [name, p] : {std::pair{".lora_A", &l->lora_A}, {".lora_B", &l->lora_B}, {".lora_E", &l->lora_E}}) {
      if (!p->grad().defined()) throw std::runtime_error("AdaLoRA: '" + path + name + "' has no gradient to score");
      const at::Tensor ipt = (*p * p->grad()).abs();
      auto [it, fresh] = ema_.try_emplace(path + name, Ema{at::zeros_like(*p), at::zeros_like(*p)});
      Ema& e = it->second;
      e.ipt = beta1_ * e.ipt + (1 - beta1_) * ipt;                        // sensitivity smoothing
      e.unc = beta2_ * e.unc + (1 - beta2_) * (ipt - e.ipt).abs();        // uncertainty
    }
}

at::Tensor RankAllocator::score(const std::string& key) const {
  auto it = ema_.find(key);
  if (it == ema_.end()) throw std::logic_error("AdaLoRA: no importance scores for '" + key + "' yet");
  return it->second.ipt * it->second.unc;
}

std::map<std::string, std::vector<bool>> RankAllocator::mask_to_budget(const Layers& layers, int64_t budget) const {
  c10::NoGradGuard g;
  std::vector<at::Tensor> triplet, all;
  for (const auto& [path, l] : layers) {
    const at::Tensor a = at::mean(score(path + ".lora_A"), {1}, /*keepdim=*/true);
    const at::Tensor b = at::mean(score(path + ".lora_B"), {0}, /*keepdim=*/false).view({-1, 1});
    const at::Tensor sum = score(path + ".lora_E").view(-1) + at::cat({a, b}, 1).sum(1).view(-1);
    triplet.push_back(sum.view({-1, 1}));
    all.push_back(sum.view(-1));
  }
  const int64_t k = init_bgt_ - budget;
  const at::Tensor scores = at::cat(all);
  if (k < 1 || k > scores.numel())
    throw std::runtime_error("AdaLoRA: a budget of " + std::to_string(budget) + " of " + std::to_string(init_bgt_) +
                             " ranks leaves nothing to mask (target_r must be below init_r)");
  const double threshold = std::get<0>(at::kthvalue(scores, k)).item<double>();
  std::map<std::string, std::vector<bool>> pattern;
  for (size_t i = 0; i < layers.size(); ++i) {
    const at::Tensor drop = triplet[i] <= threshold;
    layers[i].second->lora_E.masked_fill_(drop, 0.0);
    const at::Tensor keep = drop.logical_not().view(-1).to(at::kCPU);
    std::vector<bool> m;
    for (int64_t r = 0; r < keep.numel(); ++r) m.push_back(keep[r].item<bool>());
    pattern[layers[i].first + ".lora_E"] = std::move(m);
  }
  return pattern;
}

void mask_using_rank_pattern(const RankAllocator::Layers& layers, const std::map<std::string, std::vector<bool>>& rp) {
  c10::NoGradGuard g;
  for (const auto& [path, l] : layers) {
    auto it = rp.find(path + ".lora_E");
    if (it == rp.end()) throw std::runtime_error("AdaLoRA: rank_pattern has no entry for '" + path + ".lora_E'");
    if (static_cast<int64_t>(it->second.size()) != l->rank())
      throw std::runtime_error("AdaLoRA: rank_pattern '" + it->first + "' has " + std::to_string(it->second.size()) +
                               " entries for " + std::to_string(l->rank()) + " ranks");
    std::vector<uint8_t> keep(it->second.begin(), it->second.end());
    const at::Tensor k = at::tensor(keep.empty() ? std::vector<uint8_t>{} : keep, at::kByte)
                             .to(at::kBool).view({-1, 1}).to(l->lora_E.device());
    l->lora_E.masked_fill_(k.logical_not(), 0.0);
  }
}

}  // namespace peft
