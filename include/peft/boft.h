// BOFT (Liu et al. 2024, "Parameter-Efficient Orthogonal Finetuning via Butterfly
// Factorization"; HF PEFT 0.21's BOFT): a Linear layer's input is rotated by a
// block-diagonal orthogonal matrix and its output scaled per feature:
//   y = (base(x M) - b) * s + b,  M = blockdiag(R_1 .. R_D),  R_i = cayley(Q_i) [H, H]
// with Q_i = (B_i - B_i^T) / 2 of the trainable boft_R [1, D, H, H] (every entry trains, HF
// takes the skew part) and cayley(Q) = (I - Q)(I + Q)^-1 exactly; s = boft_s [out, 1].
// D * H = in_features (give boft_block_size H or boft_block_num D).
//
// Butterfly factors: HF multiplies boft_n_butterfly_factor permuted block-diagonal factors
// only through its CUDA kernel (fbd_cuda); without it (every CPU machine) it warns and uses
// one factor, whatever the config says, and saves boft_R [1, D, H, H]. We mirror that
// PyTorch path: one factor, the configured value kept in the file, a warning when it is
// not 1. Merging folds W <- (W M^T) * s; unmerging W <- (W M) / s (M is exactly orthogonal).
#pragma once

#include <memory>
#include <string>

#include "peft/tuner.h"

namespace peft {

struct BOFTConfig : AdapterConfig {
  int64_t boft_block_size = 4;          // H; set it or boft_block_num, not both
  int64_t boft_block_num = 0;           // D
  int64_t boft_n_butterfly_factor = 1;  // kept for the file; one factor applies (see above)
  double boft_dropout = 0.0;            // training: int(p * D) random blocks become I
  bool fan_in_fan_out = false;          // kept for the file (Linear only)
  std::string bias = "none";            // none, all, boft_only: which biases train
  bool init_weights = true;             // true: R = 0 (M = I), s = 1; false: N(0, 0.1), N(1, 0.1)

  static BOFTConfig from_json(const nlohmann::ordered_json& j, const std::string& where,
                              std::vector<std::string>* unknown_keys = nullptr);
  std::string peft_type() const override { return "BOFT"; }
  std::unique_ptr<AdapterConfig> clone() const override { return std::make_unique<BOFTConfig>(*this); }
  nlohmann::ordered_json to_json() const override;
  // Null target_modules take HF's table for the model type (LoRA's: q_proj, v_proj, ...).
  void resolve(const Model& model) override;
  NamedModules layer_targets(Model& model) const override;
  std::shared_ptr<LayerAdapter> make_layer_adapter(const std::string& path, Module& module,
                                                   at::Generator& gen) const override;
  std::vector<std::string> trained_base_parameters(Model& model, const std::set<std::string>& adapted) const override;
};

class BOFTLayer : public LayerAdapter {
 public:
  // `blocks` rotations of `block_size` (blocks * block_size = in_features).
  BOFTLayer(AdaptableLayer* host, int64_t blocks, int64_t block_size, double dropout);
  std::string type_name() const override { return "BOFTLayer"; }
  at::Tensor transform_input(const at::Tensor& x) override;  // x M
  bool transforms_input() const override { return true; }
  at::Tensor forward(const at::Tensor& x, const at::Tensor& out) override;  // (out - b) * s + b
  void merge() override;
  void unmerge() override;
  std::vector<at::Tensor*> trainable_slots() override { return {&R, &s}; }
  // M as one block-diagonal [in, in] fp32 matrix (HF's get_delta_weight's first result).
  at::Tensor rotation();

  at::Tensor R;  // boft_R [1, blocks, block_size, block_size]
  at::Tensor s;  // boft_s [out, 1]
  int64_t blocks, block_size;

 private:
  at::Tensor block_rotations();  // cayley of each block [blocks, b, b], with dropout in training
  void fold(bool inverse);
  double dropout_;
};

}  // namespace peft
