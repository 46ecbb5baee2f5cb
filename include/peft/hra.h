// HRA (Yuan et al. 2024, HF PEFT 0.21's HRA): Householder reflection adaptation. A Linear
// layer's weight is multiplied by a chain of r reflections:
//   y = x (W H)^T + b,  H = (I - 2 u_1 u_1^T)(I - 2 u_2 u_2^T) ... (I - 2 u_r u_r^T)
// with u_i the normalized columns of the trainable hra_u [in, r]; with apply_GS the columns
// are Gram-Schmidt orthonormalized first and H = I - 2 U U^T. We apply H to the input
// (x H^T, then the frozen layer), which is the same product. HF's default init repeats each
// of r/2 random columns twice, so the reflections cancel and training starts at the base.
#pragma once

#include <memory>
#include <string>

#include "peft/tuner.h"

namespace peft {

struct HRAConfig : AdapterConfig {
  int64_t r = 8;
  bool apply_GS = false;
  bool init_weights = true;   // true: pairs of equal columns (H = I; r odd: random, as HF)
  std::string bias = "none";  // none, all, hra_only: which biases train

  static HRAConfig from_json(const nlohmann::ordered_json& j, const std::string& where,
                             std::vector<std::string>* unknown_keys = nullptr);
  std::string peft_type() const override { return "HRA"; }
  std::unique_ptr<AdapterConfig> clone() const override { return std::make_unique<HRAConfig>(*this); }
  nlohmann::ordered_json to_json() const override;
  // Null target_modules take HF's table for the model type (LoRA's: q_proj, v_proj, ...).
  void resolve(const Model& model) override;
  NamedModules layer_targets(Model& model) const override;
  std::shared_ptr<LayerAdapter> make_layer_adapter(const std::string& path, Module& module,
                                                   at::Generator& gen) const override;
  std::vector<std::string> trained_base_parameters(Model& model, const std::set<std::string>& adapted) const override;
};

class HRALayer : public LayerAdapter {
 public:
  HRALayer(AdaptableLayer* host, int64_t r, bool apply_GS);
  std::string type_name() const override { return "HRALayer"; }
  at::Tensor transform_input(const at::Tensor& x) override;  // x H^T
  bool transforms_input() const override { return true; }
  at::Tensor forward(const at::Tensor& x, const at::Tensor& out) override { return out; }
  void merge() override;
  void unmerge() override;
  std::vector<at::Tensor*> trainable_slots() override { return {&u}; }
  // H [in, in], fp32 (HF's get_delta_weight); `reverse` multiplies the reflections in the
  // opposite order, which is H^-1.
  at::Tensor reflections(bool reverse) const;

  at::Tensor u;  // hra_u [in, r]
  bool apply_GS;
};

}  // namespace peft
