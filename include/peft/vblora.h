// VB-LoRA (Li et al. 2024, HF PEFT's VBLORA): LoRA whose factors are assembled from one
// vector bank shared by every adapted layer. The bank holds num_vectors trainable vectors
// of vector_length; each layer keeps logits over the bank for every vector_length-long
// piece of its A [r, in] and B [out, r], and a piece is the softmax-weighted sum of the
// topk vectors its logits pick:
//   out = base(x) + (x A^T) B^T,  piece = sum_i softmax(top-k logits)_i * bank[index_i]
// Files: "<layer>.vblora_logits_A" [r, in/L, nv] / "<layer>.vblora_logits_B" [out/L, r, nv]
// and the bank once as "base_model.vblora_vector_bank" [nv, L]; with save_only_topk_weights
// the logits are filed as "<...>_topk_indices" (the smallest int type holding nv: uint8,
// int16, int32, int64) and "<...>_topk_weights" (the first topk-1 softmax weights), and
// load back as logits that are -inf outside the top k (inference and merging only).
#pragma once

#include <memory>
#include <string>

#include "peft/tuner.h"

namespace peft {

// The bank one adapter's layers share (every layer registers it; named_parameters and
// the optimizer see it once, as HF's shared ParameterDict).
struct VBLoRABank {
  at::Tensor vectors;  // [num_vectors, vector_length]
};

struct VBLoRAConfig : AdapterConfig {
  int64_t r = 4;
  int64_t num_vectors = 256;
  int64_t vector_length = 256;
  int64_t topk = 2;
  bool save_only_topk_weights = false;
  double vblora_dropout = 0.0;
  bool fan_in_fan_out = false;  // kept for the file; the host layer knows its own layout
  std::string bias = "none";    // none, all, vblora_only: which biases train
  double init_vector_bank_bound = 0.02;  // bank ~ U(-bound, bound)
  double init_logits_std = 0.1;          // logits ~ N(0, std^2)

  static VBLoRAConfig from_json(const nlohmann::ordered_json& j, const std::string& where,
                                std::vector<std::string>* unknown_keys = nullptr);
  std::string peft_type() const override { return "VBLORA"; }
  std::unique_ptr<AdapterConfig> clone() const override { return std::make_unique<VBLoRAConfig>(*this); }
  nlohmann::ordered_json to_json() const override;
  // Null target_modules take HF's VB-LoRA table for the model type.
  void resolve(const Model& model) override;
  // The targets, and a fresh bank for the adapter being built (src/tuners/vblora/model.cpp).
  NamedModules layer_targets(Model& model) const override;
  std::shared_ptr<LayerAdapter> make_layer_adapter(const std::string& path, Module& module,
                                                   at::Generator& gen) const override;
  std::vector<std::string> trained_base_parameters(Model& model, const std::set<std::string>& adapted) const override;
  // HF's VBLoRAModel._get_adapter_state_dict: the bank once, logits as they are or top-k.
  void to_file_tensors(std::vector<std::pair<std::string, at::Tensor>>& tensors) const override;
  // HF's _remap_adapter_state_dict_for_load: top-k back to logits, the bank to every layer
  // (registered as VBLORA's reader in src/tuners/file_tensors.h).
  void from_file_tensors(std::vector<std::pair<std::string, at::Tensor>>& tensors) const;

 private:
  // The bank of the adapter being built: layer_targets makes it, the first
  // make_layer_adapter draws it, every layer holds it.
  mutable std::shared_ptr<VBLoRABank> bank_;
};

// The dtype HF files top-k indices in for a bank of `num_vectors`.
at::ScalarType vblora_index_dtype(int64_t num_vectors);

class VBLoRALayer : public LayerAdapter {
 public:
  VBLoRALayer(AdaptableLayer* host, std::shared_ptr<VBLoRABank> bank, int64_t r, int64_t num_vectors,
              int64_t vector_length, int64_t topk, double dropout);
  std::string type_name() const override { return "VBLoRALayer"; }
  at::Tensor forward(const at::Tensor& x, const at::Tensor& out) override;
  void merge() override;
  void unmerge() override;
  std::vector<at::Tensor*> trainable_slots() override { return {&logits_A, &logits_B, &bank_->vectors}; }
  // The factors the logits pick from the bank: A [r, in], B [out, r].
  std::pair<at::Tensor, at::Tensor> lora_matrices(bool fp32 = false) const;
  at::Tensor delta_weight() const;  // B A as [out, in], fp32

  at::Tensor logits_A, logits_B;  // [r, in/L, nv], [out/L, r, nv]
  int64_t topk;
  double dropout;

 private:
  std::shared_ptr<VBLoRABank> bank_;
};

}  // namespace peft
