// PEANuT (Zhong et al. 2024, HF PEFT 0.21's PEANUT): a weight-aware non-linear adapter.
// The update is computed from the frozen weight W [out, in] by a small network run over
// W's columns (each input feature's column of length out):
//   h0 = act(Wᵀ Aᵀ)                      [in, r]    A [r, out]
//   h_i = act(E_i h_{i-1})  (i = 1..depth, the encoders, each [r, r])
//   g = h_depth; g = act(D_i g) + h_{depth-i}  (the decoders, each [r, r], U-Net-like residuals)
//   ΔW = scaling · (g Bᵀ)ᵀ               [out, in]  B [out, r]
// and y = x Wᵀ + x ΔWᵀ. ΔW is rebuilt every forward from the current W. Init: A and the
// encoders / decoders kaiming, B zero (init_weights false: B kaiming too). Merge adds ΔW
// computed from the pre-merge W and keeps that W, which unmerge restores (as HF does).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "peft/tuner.h"

namespace peft {

struct PeanutConfig : AdapterConfig {
  int64_t r = 32;
  int64_t depth = 0;           // encoder / decoder pairs between A and B
  std::string act_fn = "relu";  // a transformers ACT2FN key
  double scaling = 1.0;
  bool init_weights = true;

  static PeanutConfig from_json(const nlohmann::ordered_json& j, const std::string& where,
                                std::vector<std::string>* unknown_keys = nullptr);
  std::string peft_type() const override { return "PEANUT"; }
  std::unique_ptr<AdapterConfig> clone() const override { return std::make_unique<PeanutConfig>(*this); }
  nlohmann::ordered_json to_json() const override;
  // Null target_modules take HF's table for the model type (LoRA's).
  void resolve(const Model& model) override;
  NamedModules layer_targets(Model& model) const override;
  std::shared_ptr<LayerAdapter> make_layer_adapter(const std::string& path, Module& module,
                                                   at::Generator& gen) const override;
};

// The ACT2FN keys PEANUT runs here (a subset of transformers'; others are refused by name).
bool peanut_knows_activation(const std::string& name);

class PeanutLayer : public LayerAdapter {
 public:
  PeanutLayer(AdaptableLayer* host, int64_t r, int64_t depth, std::string act_fn, double scaling);
  std::string type_name() const override { return "PeanutLayer"; }
  at::Tensor forward(const at::Tensor& x, const at::Tensor& out) override;
  void merge() override;
  void unmerge() override;
  std::vector<at::Tensor*> trainable_slots() override;
  bool reads_host_weight() const override { return true; }
  at::Tensor delta_weight() const;  // [out, in] from the host's current weight, HF's get_delta_weight

  at::Tensor A, B;                         // [r, out], [out, r]
  std::vector<at::Tensor> encoders, decoders;  // depth x [r, r] each
  int64_t r, depth;
  std::string act_fn;
  double scaling;

 private:
  at::Tensor delta_from(const at::Tensor& w) const;  // ΔW for weight w [out, in]
  at::Tensor weight_before_merge_;
};

}  // namespace peft
