// UniLoRA (Li et al. 2025, "Uni-LoRA: One Vector Is All You Need"; HF PEFT 0.21's
// UNILORA): LoRA whose factors are all read from one trainable vector θ_d
// [theta_d_length] that every layer of the adapter shares. Each entry of a layer's
// A [r, in] and B [out, r] is a fixed index into θ_d times a fixed scale:
//   A = θ_d[idx_A] ⊙ s_A,  B = θ_d[idx_B] ⊙ s_B,  out = base(x) + (x Aᵀ) Bᵀ
// The indices are one draw for all the adapter's layers together (HF's generate_index:
// NumPy's default_rng(proj_seed); each θ_d entry is used ⌊D/d⌋ or ⌈D/d⌉ times over the
// D entries of all A and B, shuffled, dealt in module order, A then B per layer), and an
// entry used n times scales by 1/√n. The file holds θ_d once, "base_model.unilora_theta_d";
// with save_indices also each layer's unilora_indices_A/B and unilora_scales_A/B, which
// otherwise are drawn again from proj_seed on loading. Init: θ_d ~ U(±init_theta_d_bound)
// (init_weights false: N(0, 1)), torch's first draw from the seed.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "peft/tuner.h"

namespace peft {

// θ_d of one adapter: every layer registers it (the model's parameters list it once, as
// HF's shared ParameterDict) and names it as a shared slot, so it is filed once.
struct UniloraVector {
  at::Tensor theta_d;  // [theta_d_length]
};

struct UniloraConfig : AdapterConfig {
  int64_t r = 4;
  int64_t proj_seed = 42;  // NumPy's default_rng seed for the indices (>= 0)
  int64_t theta_d_length = 256;
  double unilora_dropout = 0.0;
  bool fan_in_fan_out = false;  // kept for the file; the host layer knows its own layout
  std::string bias = "none";    // none, all, unilora_only: which biases train
  double init_theta_d_bound = 0.02;
  bool init_weights = true;
  bool save_indices = false;  // file each layer's indices and scales too

  static UniloraConfig from_json(const nlohmann::ordered_json& j, const std::string& where,
                                 std::vector<std::string>* unknown_keys = nullptr);
  std::string peft_type() const override { return "UNILORA"; }
  std::unique_ptr<AdapterConfig> clone() const override { return std::make_unique<UniloraConfig>(*this); }
  nlohmann::ordered_json to_json() const override;
  // Null target_modules take HF's table for the model type (LoRA's).
  void resolve(const Model& model) override;
  // The targets, and the index draw over all of them (src/tuners/unilora/model.cpp).
  NamedModules layer_targets(Model& model) const override;
  std::shared_ptr<LayerAdapter> make_layer_adapter(const std::string& path, Module& module,
                                                   at::Generator& gen) const override;
  std::vector<std::string> trained_base_parameters(Model& model, const std::set<std::string>& adapted) const override;

  // The adapter being built: θ_d and each target's indices and scales (made by
  // layer_targets, θ_d drawn by the first make_layer_adapter).
  struct Plan;

 private:
  mutable std::shared_ptr<Plan> plan_;
};

// HF's UniLoraModel.generate_index(count, theta_d_length, proj_seed): int64 [count].
at::Tensor unilora_generate_index(int64_t count, int64_t theta_d_length, uint64_t proj_seed);

class UniloraLayer : public LayerAdapter {
 public:
  // `file_key` is "<prefix><path>.unilora_" when the indices and scales are filed (save_indices), else "".
  UniloraLayer(AdaptableLayer* host, std::shared_ptr<UniloraVector> vector, at::Tensor indices_A,
               at::Tensor indices_B, at::Tensor scales_A, at::Tensor scales_B, double dropout, std::string file_key);
  std::string type_name() const override { return "UniloraLayer"; }
  at::Tensor forward(const at::Tensor& x, const at::Tensor& out) override;
  void merge() override;
  void unmerge() override;
  std::vector<at::Tensor*> trainable_slots() override { return {&vector_->theta_d}; }
  std::vector<SharedSlot> shared_slots() override;
  // A [r, in] and B [out, r] as θ_d gives them (HF's _get_lora_matrices).
  std::pair<at::Tensor, at::Tensor> lora_matrices() const;
  at::Tensor delta_weight() const;  // B A as [out, in], fp32 (HF's get_delta_weight)

  at::Tensor indices_A, indices_B;  // int64 [r, in], [out, r]
  at::Tensor scales_A, scales_B;    // float, the same shapes
  double dropout;

 private:
  std::shared_ptr<UniloraVector> vector_;
  std::string file_key_;
};

}  // namespace peft
