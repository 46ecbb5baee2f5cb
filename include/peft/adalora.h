// AdaLoRA (Zhang et al. 2023, HF PEFT's ADALORA): LoRA in SVD form whose ranks are
// allocated while training. Each adapted layer holds P (lora_B [out, r]), the singular
// values Lambda (lora_E [r, 1]) and Q (lora_A [r, in]):
//   out = base(x) + (x (A * E)^T B^T) * scaling / (ranknum + 1e-5)
// with scaling = lora_alpha (r where alpha is 0) and ranknum = init_r. During `peft train`
// the RankAllocator scores every triplet (E_i, A_i, B_i) by the EMA of |w * grad| times its
// uncertainty, and on HF's cubic budget schedule (tinit / tfinal / deltaT / total_step)
// zeroes the singular values of the least important ones; the orthogonality of A and B is
// encouraged by orth_reg_weight * mean ||A A^T - I||_F, ||B^T B - I||_F added to the loss.
// The final masks are saved as rank_pattern, and the file holds only the kept ranks.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "peft/tuner.h"

namespace peft {

class RankAllocator;  // src/tuners/adalora/rank_allocator.h

struct AdaLoraConfig : AdapterConfig {
  int64_t init_r = 12, target_r = 8;
  int64_t tinit = 0, tfinal = 0, deltaT = 1;
  int64_t total_step = 0;  // 0: not given (peft train takes the run's step count)
  double beta1 = 0.85, beta2 = 0.85, orth_reg_weight = 0.5;
  double lora_alpha = 8, lora_dropout = 0.0;
  int64_t r = 8;  // LoRA's r: unused by AdaLoRA, kept for the file
  std::string bias = "none";  // none | all | lora_only
  bool fan_in_fan_out = false;
  bool init_lora_weights = true;  // true: E = 0, A and B ~ N(0, 0.02); false: all N(0, 1)
  // Module key ("model.layers.0.self_attn.q_proj.lora_E") -> which of its init_r ranks are
  // kept; set by training, saved, and sizing the layers when an adapter is loaded.
  std::map<std::string, std::vector<bool>> rank_pattern;
  bool has_rank_pattern = false;  // the file's rank_pattern is not null

  static AdaLoraConfig from_json(const nlohmann::ordered_json& j, const std::string& where,
                                 std::vector<std::string>* unknown_keys = nullptr);
  std::string peft_type() const override { return "ADALORA"; }
  std::unique_ptr<AdapterConfig> clone() const override { return std::make_unique<AdaLoraConfig>(*this); }
  nlohmann::ordered_json to_json() const override;
  void resolve(const Model& model) override;
  NamedModules layer_targets(Model& model) const override;
  std::shared_ptr<LayerAdapter> make_layer_adapter(const std::string& path, Module& module,
                                                   at::Generator& gen) const override;
  std::vector<std::string> trained_base_parameters(Model& model, const std::set<std::string>& adapted) const override;
  // Saved weights are loaded into layers sized by rank_pattern (HF's resize on load).
  std::unique_ptr<AdapterConfig> for_loading() const override;
  int64_t unsaved_parameters_per_layer() const override { return 1; }  // HF's ranknum
  // Cuts the masked ranks out of lora_A / lora_E / lora_B, as HF PEFT saves them.
  void to_file_tensors(std::vector<std::pair<std::string, at::Tensor>>& tensors) const override;
  void begin_training(int64_t total_steps) override;
  // HF's AdaLoraModel.update_and_allocate(global_step).
  void after_optimizer_step(const AdaptedLayers& layers, int64_t global_step) override;
  // Throws naming the setting when the schedule leaves no budgeting phase.
  void check_schedule(const std::string& where) const;

 private:
  bool size_by_rank_pattern_ = false;     // for_loading
  std::shared_ptr<RankAllocator> allocator_;  // made at the first training step
};

// HF PEFT's SVDLinear on a Linear or GPT-2's Conv1D.
class AdaLoraLinear : public LayerAdapter {
 public:
  AdaLoraLinear(AdaptableLayer* host, int64_t r, double scaling, double ranknum, double dropout,
                double orth_reg_weight);
  std::string type_name() const override { return "SVDLinear"; }
  at::Tensor forward(const at::Tensor& x, const at::Tensor& out) override;
  void merge() override;
  void unmerge() override;
  std::vector<at::Tensor*> trainable_slots() override { return {&lora_A, &lora_B, &lora_E}; }
  // While training: orth_reg_weight * (||A A^T - I||_F + ||B^T B - I||_F) / 2, so that the
  // mean over layers is HF's regularizer (the mean over all A and B matrices).
  at::Tensor aux_loss() const override;
  at::Tensor delta_weight() const;  // B (A * E) * scaling / (ranknum + 1e-5), [out, in], fp32
  int64_t rank() const { return lora_A.size(0); }

  at::Tensor lora_A, lora_B, lora_E;  // [r, in], [out, r], [r, 1]
  double scaling, ranknum, dropout, orth_reg_weight;
};

}  // namespace peft
