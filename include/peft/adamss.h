// ADAMSS (HF PEFT 0.21's AdaMSS, adaptive multi-subspaces): the frozen weight W [out, in]
// (with the bias as an extra column where the layer has one) gets a seeded torch.svd_lowrank
// of rank R = min(r, out, in(+1)): U [out, R] and V [in(+1), R]. KMeans (scikit-learn's,
// init "random", one run, 10 Lloyd iterations, random_state 123456789) clusters the rows of U
// into K = min(num_subspaces, out) groups of output rows; subspace i trains A_i [r_i, R] and
// B_i [|group i|, r_i]:
//   y = base(x) + scatter_rows( B_i A_i Vᵀ [x, 1] ),   ΔW|Δb = scatter_rows(B_i A_i Vᵀ)
// newB = Vᵀ [R, in(+1)] is frozen but filed (HF's persistent buffer adamss_newB); the
// grouping (scatter_index) is never filed: it is recomputed from the base when a file loads.
// A_i starts at the top directions of the group's rows of U (a QR), B_i at zero (init
// "orthogonal") or N(0, 0.01²) (init_weights null), so the default starts at the base.
// use_asa (the Trainer callback's subspace masking) files nothing: such adapters load and
// run, but training one is refused.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "peft/tuner.h"

namespace peft {

struct AdamssConfig : AdapterConfig {
  int64_t r = 100;
  int64_t num_subspaces = 5;
  int64_t subspace_rank = 1;
  std::optional<std::string> init_weights = "orthogonal";  // nullopt: random B (HF's None)
  bool use_asa = false;  // loads and runs; training with it is refused
  int64_t asa_target_subspaces = 50, init_warmup = 50, final_warmup = 1000, mask_interval = 100;
  double asa_importance_beta = 0.85, asa_uncertainty_beta = 0.85, asa_schedule_exponent = 3.0;
  bool use_dynamic_rank = false;
  double svd_threshold = 0.1;
  uint64_t random_seed = 0;  // seeds slice_pca's svd_lowrank sketch

  static AdamssConfig from_json(const nlohmann::ordered_json& j, const std::string& where,
                                std::vector<std::string>* unknown_keys = nullptr);
  std::string peft_type() const override { return "ADAMSS"; }
  std::unique_ptr<AdapterConfig> clone() const override { return std::make_unique<AdamssConfig>(*this); }
  nlohmann::ordered_json to_json() const override;
  // Null target_modules take HF's table (LoRA's, ViT's query and value).
  void resolve(const Model& model) override;
  NamedModules layer_targets(Model& model) const override;
  std::shared_ptr<LayerAdapter> make_layer_adapter(const std::string& path, Module& module,
                                                   at::Generator& gen) const override;
  // ASA needs HF's Trainer callback (importance EMAs, global top-k masking): refused.
  void begin_training(int64_t total_steps) override;
};

class AdamssLayer : public LayerAdapter {
 public:
  // SVD, clustering, A_i from the QR init, B_i zero (or random from gen where init_weights is null).
  // file_prefix: "<key prefix><path>.", where newB is filed.
  AdamssLayer(AdaptableLayer* host, const AdamssConfig& c, at::Generator& gen, std::string file_prefix);
  std::string type_name() const override { return "AdamssLayer"; }
  at::Tensor forward(const at::Tensor& x, const at::Tensor& out) override;
  void merge() override;
  void unmerge() override;
  std::vector<at::Tensor*> trainable_slots() override;
  // newB, HF's persistent buffer: filed under the layer's path, not a parameter (HF's
  // trainable line does not count it).
  std::vector<SharedSlot> shared_slots() override;
  // The adapter path scatter_rows(B_i A_i newB) [out, in(+1)] in fp32; delta_weight drops
  // the bias column, delta_bias is it (zeros without a bias), as HF's.
  at::Tensor full_delta() const;
  at::Tensor delta_weight() const;
  at::Tensor delta_bias() const;

  std::vector<at::Tensor> A, B;  // per subspace: [r_i, R], [|group i|, r_i]
  at::Tensor newB;               // frozen, filed: [R, in(+1)]
  at::Tensor scatter_index;      // [out] int64: the groups' rows, group after group
  std::vector<std::vector<int64_t>> groups;
  bool has_bias = false;

 private:
  std::string file_prefix_;
};

}  // namespace peft
