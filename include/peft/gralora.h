// GraLoRA (Jung et al. 2025, HF PEFT 0.21's GRALORA): granular low-rank adaptation. The
// input [in] and output [out] of a Linear (or Conv1D) layer are cut into k blocks; each
// input block n has its own A_n [in/k, r] and each output block j its own B_j [r, out/k].
// Output block j reads, from every input block n, the j-th slice (r/k columns) of x_n A_n:
//   y_j = concat_n (x_n A_n[:, j·r/k : (j+1)·r/k]) B_j
// so the update has rank up to k·r for LoRA's parameter count. With hybrid_r > 0 a plain
// LoRA pair (gralora_A_general / gralora_B_general) runs beside it. Both are scaled by
// alpha / (r + hybrid_r). Init: A kaiming, B zero (init_weights false: B kaiming too).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "peft/tuner.h"

namespace peft {

struct GraloraConfig : AdapterConfig {
  int64_t r = 32;         // the GraLoRA rank (divisible by gralora_k)
  int64_t hybrid_r = 0;   // the plain LoRA rank beside it
  double alpha = 64;
  double gralora_dropout = 0.0;
  int64_t gralora_k = 2;  // blocks per side
  bool fan_in_fan_out = false;
  std::string bias = "none";  // none, all, gralora_only: which biases train
  bool init_weights = true;

  static GraloraConfig from_json(const nlohmann::ordered_json& j, const std::string& where,
                                 std::vector<std::string>* unknown_keys = nullptr);
  std::string peft_type() const override { return "GRALORA"; }
  std::unique_ptr<AdapterConfig> clone() const override { return std::make_unique<GraloraConfig>(*this); }
  nlohmann::ordered_json to_json() const override;
  // Null target_modules take HF's table for the model type (LoRA's).
  void resolve(const Model& model) override;
  NamedModules layer_targets(Model& model) const override;
  std::shared_ptr<LayerAdapter> make_layer_adapter(const std::string& path, Module& module,
                                                   at::Generator& gen) const override;
  std::vector<std::string> trained_base_parameters(Model& model, const std::set<std::string>& adapted) const override;
};

class GraloraLayer : public LayerAdapter {
 public:
  GraloraLayer(AdaptableLayer* host, int64_t r, int64_t hybrid_r, int64_t k, double scale, double dropout);
  std::string type_name() const override { return "GraloraLayer"; }
  at::Tensor forward(const at::Tensor& x, const at::Tensor& out) override;
  void merge() override;
  void unmerge() override;
  std::vector<at::Tensor*> trainable_slots() override;
  at::Tensor delta_weight() const;  // [out, in], HF's get_delta_weight

  at::Tensor A, B;                  // [k, in/k, r], [k, r, out/k]
  at::Tensor A_general, B_general;  // [hybrid_r, in], [out, hybrid_r]; undefined when hybrid_r = 0
  int64_t r, hybrid_r, k;
  double scale, dropout;

 private:
  at::Tensor block_product(const at::Tensor& x) const;  // the GraLoRA term, unscaled
};

}  // namespace peft
