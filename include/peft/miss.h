// MiSS (Kang et al. 2024, formerly Bone; HF PEFT 0.21's MISS): a Linear layer's weight is
// updated by one small trainable block shared across its column blocks.
//  - balance (HF's default, init_weights true/false): miss_block M [r, out];
//      dW[o, j] = M[j mod r, o], i.e. y = base(x) + (sum over r-wide chunks of x) M
//    (x zero-padded to a multiple of r);
//  - mini (init_weights "mini"): M [r, mini_r], tiled out / mini_r times along out;
//  - bat (init_weights "bat"): M [out / r, r, r], a weight-dependent update: each r x r
//    block W_ij of W becomes W_ij M_i + M_i (unmerge inverts I + M_i).
#pragma once

#include <memory>
#include <string>

#include "peft/tuner.h"

namespace peft {

struct MissConfig : AdapterConfig {
  int64_t r = 64;
  double miss_dropout = 0.0;
  int64_t mini_r = 1;
  std::string init_weights = "true";  // "true" (zeros), "false" (kaiming uniform), "bat", "mini"
  std::string bias = "none";          // none, all, miss_only: which biases train

  static MissConfig from_json(const nlohmann::ordered_json& j, const std::string& where,
                              std::vector<std::string>* unknown_keys = nullptr);
  std::string peft_type() const override { return "MISS"; }
  std::unique_ptr<AdapterConfig> clone() const override { return std::make_unique<MissConfig>(*this); }
  nlohmann::ordered_json to_json() const override;
  // Null target_modules take HF's table for the model type (LoRA's: q_proj, v_proj, ...).
  void resolve(const Model& model) override;
  NamedModules layer_targets(Model& model) const override;
  std::shared_ptr<LayerAdapter> make_layer_adapter(const std::string& path, Module& module,
                                                   at::Generator& gen) const override;
  std::vector<std::string> trained_base_parameters(Model& model, const std::set<std::string>& adapted) const override;
};

class MissLayer : public LayerAdapter {
 public:
  enum class Kind { kBalance, kMini, kBat };
  MissLayer(AdaptableLayer* host, Kind kind, int64_t r, int64_t mini_r, double dropout);
  std::string type_name() const override { return "MissLayer"; }
  at::Tensor forward(const at::Tensor& x, const at::Tensor& out) override;
  void merge() override;
  void unmerge() override;
  std::vector<at::Tensor*> trainable_slots() override { return {&block}; }
  bool reads_host_weight() const override { return kind == Kind::kBat; }
  // Balance / mini: dW [out, in], fp32. Bat: the update of the weight `w` [out, in].
  at::Tensor delta_weight(const at::Tensor& w) const;

  at::Tensor block;  // miss_block: [r, out], [r, mini_r] or [out / r, r, r]
  Kind kind;
  int64_t r;
  double dropout;

 private:
  at::Tensor host_weight() const;  // [out, in], fp32
};

}  // namespace peft
