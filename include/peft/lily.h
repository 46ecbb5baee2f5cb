// LILY (Zhong et al. 2024, HF PEFT 0.21's LILY): low-rank interconnected adaptation across
// layers. Beside a Linear layer:
//   h = x Aᵀ (A [r, in]),  p = mean over all tokens of softmax(h Rᵀ) (R [num_B, r]),
//   y += scaling · h (Σ_e p_e B_e)   (B [num_B · r, out] read as num_B experts [r, out])
// Layers are grouped by the target name they matched and their weight's shape (HF's
// _post_injection_hook): a group's layers all share one B, and consecutive runs of
// `stride_A` layers share one A; each layer keeps its own router. Shared tensors are filed
// under every layer's key, as HF's state dict does. Not mergeable: p depends on the batch.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "peft/tuner.h"

namespace peft {

struct LilyConfig : AdapterConfig {
  int64_t r = 32;
  double scaling = 1.0;
  int64_t stride_A = 1;  // consecutive layers of a group sharing one A
  int64_t num_B = 2;     // experts in the group's shared B
  bool init_weights = true;

  static LilyConfig from_json(const nlohmann::ordered_json& j, const std::string& where,
                              std::vector<std::string>* unknown_keys = nullptr);
  std::string peft_type() const override { return "LILY"; }
  std::unique_ptr<AdapterConfig> clone() const override { return std::make_unique<LilyConfig>(*this); }
  nlohmann::ordered_json to_json() const override;
  bool mergeable() const override { return false; }  // the expert mix depends on the batch
  // Null target_modules take HF's table for the model type (LoRA's).
  void resolve(const Model& model) override;
  // Finds the targets and groups them (which layers share A and B).
  NamedModules layer_targets(Model& model) const override;
  std::shared_ptr<LayerAdapter> make_layer_adapter(const std::string& path, Module& module,
                                                   at::Generator& gen) const override;

  // The A and B tensors a layer uses, shared by address with the other layers of its group
  // (set by layer_targets for the adapter being built).
  struct SharedFactors {
    std::shared_ptr<at::Tensor> A, B;
  };

 private:
  mutable std::map<std::string, SharedFactors> shared_;  // target path -> its group's tensors
};

class LilyLayer : public LayerAdapter {
 public:
  LilyLayer(AdaptableLayer* host, int64_t r, int64_t num_B, double scaling, LilyConfig::SharedFactors factors);
  std::string type_name() const override { return "LilyLayer"; }
  at::Tensor forward(const at::Tensor& x, const at::Tensor& out) override;
  void merge() override;
  void unmerge() override {}
  std::vector<at::Tensor*> trainable_slots() override { return {factors_.A.get(), factors_.B.get(), &router}; }
  const at::Tensor& A() const { return *factors_.A; }  // [r, in], shared
  const at::Tensor& B() const { return *factors_.B; }  // [num_B · r, out], shared

  at::Tensor router;  // [num_B, r]
  int64_t r, num_B;
  double scaling;

 private:
  LilyConfig::SharedFactors factors_;
};

}  // namespace peft
