// HF PEFT's RankAllocator: the importance of every (E_i, A_i, B_i) triplet of an AdaLoRA
// adapter, smoothed over the steps, and the budget schedule that decides how many of them
// survive. Keys are HF's module keys ("model.layers.0.self_attn.q_proj.lora_E").
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "peft/adalora.h"

namespace peft {

class RankAllocator {
 public:
  using Layers = std::vector<std::pair<std::string, AdaLoraLinear*>>;  // by module path
  // The initial budget is the adapter's ranks now (HF: when the allocator is made).
  RankAllocator(const AdaLoraConfig& cfg, const Layers& layers);

  // (budget, whether to mask at this step): HF's budget_schedule.
  std::pair<int64_t, bool> budget_schedule(int64_t step) const;
  // ipt = |w * grad|; EMA of it (beta1) and of its deviation from that EMA (beta2).
  void update_ipt(const Layers& layers);
  // Zeroes the singular values of all but the `budget` most important triplets; returns
  // the masks (true: kept) by "<path>.lora_E".
  std::map<std::string, std::vector<bool>> mask_to_budget(const Layers& layers, int64_t budget) const;
  void reset_ipt() { ema_.clear(); }

 private:
  struct Ema {
    at::Tensor ipt, unc;
  };
  at::Tensor score(const std::string& key) const;  // EMA importance x uncertainty

  int64_t tinit_, tfinal_, total_step_, delta_t_;
  double beta1_, beta2_;
  int64_t init_bgt_ = 0, target_bgt_ = 0;
  std::map<std::string, Ema> ema_;  // "<path>.lora_A" / ".lora_B" / ".lora_E"
};

// Zeroes the singular values rank_pattern masks (HF's mask_using_rank_pattern).
void mask_using_rank_pattern(const RankAllocator::Layers& layers, const std::map<std::string, std::vector<bool>>& rp);

}  // namespace peft
