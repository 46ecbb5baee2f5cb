// Poly (Polytropon, Ponti et al. 2023) and multi-head routing (MHR, Caccia et al. 2023),
// HF PEFT 0.21's POLY: each adapted Linear holds n_skills LoRA modules ("skills"), and
// every task learns which to mix. For a row of task t,
//   w = normalize(sigmoid(module_logits[t]))   (training: a relaxed Bernoulli sample)
//   y = x W^T + b + x (sum_s w_s A_s) (sum_s w_s B_s) / r
// With n_splits > 1 (MHR) the input and output features are cut into splits, each with
// its own skills and mixing weights. Each example's task comes from its data line's
// "task_ids" (peft/task_ids.h). Not mergeable (the weights depend on the row's task), as in HF.
#pragma once

#include <memory>
#include <string>

#include "peft/tuner.h"

namespace peft {

struct PolyConfig : AdapterConfig {
  int64_t r = 8;
  int64_t n_tasks = 1, n_skills = 4, n_splits = 1;
  bool init_weights = true;  // true: the B factors start at zero (the base model)

  static PolyConfig from_json(const nlohmann::ordered_json& j, const std::string& where,
                              std::vector<std::string>* unknown_keys = nullptr);
  std::string peft_type() const override { return "POLY"; }
  std::unique_ptr<AdapterConfig> clone() const override { return std::make_unique<PolyConfig>(*this); }
  nlohmann::ordered_json to_json() const override;
  bool mergeable() const override { return false; }
  // Null target_modules take HF's table for the model type (LoRA's: q_proj, v_proj, ...).
  void resolve(const Model& model) override;
  NamedModules layer_targets(Model& model) const override;
  std::shared_ptr<LayerAdapter> make_layer_adapter(const std::string& path, Module& module,
                                                   at::Generator& gen) const override;
};

class PolyLayer : public LayerAdapter {
 public:
  PolyLayer(AdaptableLayer* host, const PolyConfig& c);
  std::string type_name() const override { return "PolyLayer"; }
  at::Tensor forward(const at::Tensor& x, const at::Tensor& out) override;
  void merge() override;    // refused: the delta depends on each row's task
  void unmerge() override {}
  std::vector<at::Tensor*> trainable_slots() override { return {&lora_A, &lora_B, &module_logits}; }
  // The router's mixing weights [b, n_splits, n_skills] for task ids [b] (HF's PolyRouter).
  at::Tensor mixing_weights(const at::Tensor& task_ids) const;

  at::Tensor lora_A;         // poly_lora_A [splits, skills, in / splits, r]
  at::Tensor lora_B;         // poly_lora_B [splits, skills, r, out / splits]
  at::Tensor module_logits;  // poly_router.module_logits [tasks, splits * skills]
  int64_t r, n_tasks, n_skills, n_splits;
};

}  // namespace peft
