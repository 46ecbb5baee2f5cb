// PSOFT (HF PEFT 0.21's PSOFT, orthogonal fine-tuning in the principal subspace): the frozen
// weight's top r singular directions give A [r, in] and B [out, r] (never filed: rebuilt
// from the base weight), and an r x r matrix R between them is trained:
//   y = base(x) + scaling · (x Aᵀ Rᵀ − x Aᵀ) Bᵀ,   ΔW = scaling · B (R − I) A
// with scaling = psoft_alpha / r. R = diag(vector_b) · (I + Q)(I − Q)⁻¹ · diag(vector_a)
// for Q skew-symmetric from its r(r−1)/2 upper-triangle entries (psoft_orth; the Cayley
// transform exactly or its Neumann series), or a free r x r matrix. At init Q = 0 (R = I)
// and the vectors are ones, so the adapted model starts as the base.
// A and B: psoft_init A = Vhᵣ, B = Uᵣ diag(Sᵣ / scaling); pissa_init splits √(Sᵣ / scaling)
// between them. The SVD is torch.linalg.svd, or torch.svd_lowrank seeded by random_seed.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "peft/tuner.h"

namespace peft {

struct PsoftConfig : AdapterConfig {
  int64_t r = 32;
  double psoft_alpha = 32;
  double psoft_dropout = 0.0;
  bool fan_in_fan_out = false;            // kept for the file; nn.Linear targets only
  std::string ab_svd_init = "psoft_init";  // or pissa_init
  std::string psoft_svd = "full";          // or lowrank (torch.svd_lowrank)
  int64_t psoft_svd_lowrank_niter = 10;
  uint64_t random_seed = 0;                // seeds svd_lowrank's sketch (torch.manual_seed)
  bool psoft_orth = true;                  // Cayley-parametrized R; false: a free matrix
  bool psoft_mag_b = true, psoft_mag_a = true;  // trained scale vectors on R's two sides
  bool use_cayley_neumann = false;
  int64_t num_cayley_neumann_terms = 5;
  std::optional<double> cayley_neumann_eps;  // Neumann only: caps ‖Q‖_F
  bool init_weights = true;                  // false: Q ~ N(0, 0.1²) (or R = I + N(0, 0.1²))

  static PsoftConfig from_json(const nlohmann::ordered_json& j, const std::string& where,
                               std::vector<std::string>* unknown_keys = nullptr);
  std::string peft_type() const override { return "PSOFT"; }
  std::unique_ptr<AdapterConfig> clone() const override { return std::make_unique<PsoftConfig>(*this); }
  nlohmann::ordered_json to_json() const override;
  // Null target_modules take HF's table (LoRA's).
  void resolve(const Model& model) override;
  NamedModules layer_targets(Model& model) const override;
  std::shared_ptr<LayerAdapter> make_layer_adapter(const std::string& path, Module& module,
                                                   at::Generator& gen) const override;
};

class PsoftLayer : public LayerAdapter {
 public:
  // A and B from the host's weight; R at the identity (Q = 0, vectors of ones).
  PsoftLayer(AdaptableLayer* host, const PsoftConfig& c);
  std::string type_name() const override { return "PsoftLayer"; }
  at::Tensor forward(const at::Tensor& x, const at::Tensor& out) override;
  void merge() override;
  void unmerge() override;
  std::vector<at::Tensor*> trainable_slots() override;
  // R [r, r] (HF's OrthLayer.get_matrix).
  at::Tensor R() const;
  // scaling · B (R − I) A, [out, in] fp32 (HF's get_delta_weight).
  at::Tensor delta_weight() const;

  at::Tensor weight;              // orth: Q's upper triangle [r(r−1)/2]; else R [r, r]
  at::Tensor vector_b, vector_a;  // [r] each, undefined where switched off
  at::Tensor A, B;                // frozen, [r, in] and [out, r]
  double scaling, dropout;

 private:
  int64_t r_;
  bool orth_, neumann_;
  int64_t neumann_terms_;
  std::optional<double> neumann_eps_;
};

}  // namespace peft
