// OFT (Qiu et al. 2023; HF PEFT 0.21's OFT): orthogonal fine-tuning. The input of a Linear
// layer is rotated block by block before the frozen layer sees it:
//   y = base(x R),  R = blockdiag(R_1 .. R_r),  R_i = cayley(Q_i) [b, b], r * b = in
// Q_i is skew-symmetric with its b(b-1)/2 upper entries trainable (oft_R.weight [r, b(b-1)/2],
// one row shared by every block with block_share). cayley(Q) = (I + Q)^-1 (I - Q) exactly, or
// HF's default Neumann approximation I + 2Q + 2Q^2 + ... + Q^(n-1) (num_cayley_neumann_terms).
// An Embedding's output is rotated instead (oft_embedding_R.weight): y = E[ids] R.
// Merging folds R into the weight (W R^T; an embedding's E R), unmerging applies R^-1: the
// Neumann R is not exactly orthogonal, so HF inverts it, and so do we.
#pragma once

#include <memory>
#include <string>

#include "peft/tuner.h"

namespace peft {

struct OFTConfig : AdapterConfig {
  int64_t r = 0;                // blocks per layer; set r or oft_block_size, not both
  int64_t oft_block_size = 32;  // adjusted per layer to the nearest divisor of in, as HF does
  double module_dropout = 0.0;  // kept for the file: HF 0.21 builds the dropout but never applies it
  bool fan_in_fan_out = false;  // kept for the file
  std::string bias = "none";    // none, all, oft_only: which biases train
  bool init_weights = true;     // true: zeros (R = I, the base model); false: N(0, 0.1)
  bool coft = false;            // constrained OFT: each forward projects Q into a ball of radius eps
  double eps = 6e-5;
  bool block_share = false;
  bool use_cayley_neumann = true;
  int64_t num_cayley_neumann_terms = 5;

  static OFTConfig from_json(const nlohmann::ordered_json& j, const std::string& where,
                             std::vector<std::string>* unknown_keys = nullptr);
  std::string peft_type() const override { return "OFT"; }
  std::unique_ptr<AdapterConfig> clone() const override { return std::make_unique<OFTConfig>(*this); }
  nlohmann::ordered_json to_json() const override;
  // Null target_modules take HF's table for the model type (LoRA's: q_proj, v_proj, ...).
  void resolve(const Model& model) override;
  NamedModules layer_targets(Model& model) const override;
  std::shared_ptr<LayerAdapter> make_layer_adapter(const std::string& path, Module& module,
                                                   at::Generator& gen) const override;
  std::vector<std::string> trained_base_parameters(Model& model, const std::set<std::string>& adapted) const override;
};

// HF's OFTLayer.adjust_oft_parameters: `wanted` (a block size or a block count) moved to the
// nearest divisor of `features` (the smaller one on a tie), or `features` if it is larger.
int64_t adjust_oft_parameter(int64_t features, int64_t wanted);

class OFTLayer : public LayerAdapter {
 public:
  // `blocks` rotations of `block_size` (blocks * block_size = the rotated dimension).
  OFTLayer(AdaptableLayer* host, int64_t blocks, int64_t block_size, const OFTConfig& c);
  std::string type_name() const override { return "OFTLayer"; }
  at::Tensor transform_input(const at::Tensor& x) override;  // Linear: x R
  bool transforms_input() const override { return !on_embedding_; }
  at::Tensor forward(const at::Tensor& x, const at::Tensor& out) override;  // Embedding: out R
  void merge() override;
  void unmerge() override;
  std::vector<at::Tensor*> trainable_slots() override { return {&weight}; }
  // R as one block-diagonal [n, n] fp32 matrix (after coft's projection, if on).
  at::Tensor rotation();

  at::Tensor weight;  // [blocks or 1, b(b-1)/2]
  int64_t blocks, block_size;

 private:
  at::Tensor block_rotations();  // [blocks or 1, b, b]
  at::Tensor rotate(const at::Tensor& x);  // x [..., n] -> x R, in x's dtype
  void fold(bool inverse);
  bool on_embedding_;
  bool coft_, block_share_, neumann_;
  double eps_;
  int64_t neumann_terms_;
};

}  // namespace peft
