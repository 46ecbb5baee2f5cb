// OSF (HF PEFT 0.21's OSF, Orthogonal Subspace Fine-tuning): the frozen weight's SVD
// W = U S Vᵀ is split at the effective rank k. The top k directions (U_high, S_high,
// V_high) stay frozen; the rest start as trainable U_low [out, m−k], S_low [m−k],
// V_low [m−k, in] (m = min(out, in)), and the layer computes
//   W' = W + (U_low diag(S_low) V_low − U_low⁰ diag(S_low⁰) V_low⁰)
// with the ⁰ factors the frozen SVD values (recomputed from the base weight when a file
// loads: only U_low, S_low and V_low are filed). Training projects the gradients of U_low
// and V_low off the frozen top subspace, as HF's gradient hooks do.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "peft/tuner.h"

namespace peft {

// An effective_rank value as HF reads it: a float in (0, 1] is a fraction of the smaller
// weight dimension, anything else a count (int(value)).
struct OsfRank {
  double value = 0;
  bool is_float = false;
  // HF's _resolve_rank: the preserved rank for a weight whose smaller dimension is `min_dim`.
  int64_t resolve(int64_t min_dim) const;
};

struct OsfConfig : AdapterConfig {
  std::optional<OsfRank> effective_rank;                  // none: min_dim / 2
  std::vector<std::pair<std::string, OsfRank>> rank_pattern;  // re.search on the module path, first match wins
  bool init_weights = true;  // false: U_low, S_low, V_low drawn N(0, 1) (not at the base)

  static OsfConfig from_json(const nlohmann::ordered_json& j, const std::string& where,
                             std::vector<std::string>* unknown_keys = nullptr);
  std::string peft_type() const override { return "OSF"; }
  std::unique_ptr<AdapterConfig> clone() const override { return std::make_unique<OsfConfig>(*this); }
  nlohmann::ordered_json to_json() const override;
  // Null target_modules: HF's OSF table for the model type, else "all-linear".
  void resolve(const Model& model) override;
  NamedModules layer_targets(Model& model) const override;
  std::shared_ptr<LayerAdapter> make_layer_adapter(const std::string& path, Module& module,
                                                   at::Generator& gen) const override;
  // The preserved rank k for the layer at `path` (HF's _create_and_replace).
  int64_t rank_for(const std::string& path, int64_t min_dim) const;
};

class OsfLayer : public LayerAdapter {
 public:
  // SVD of the host's weight, split at `k`; the trainable factors start at the low part.
  OsfLayer(AdaptableLayer* host, int64_t k);
  std::string type_name() const override { return "OsfLayer"; }
  at::Tensor forward(const at::Tensor& x, const at::Tensor& out) override;
  void merge() override;
  void unmerge() override;
  std::vector<at::Tensor*> trainable_slots() override { return {&U_low, &S_low, &V_low}; }
  // U_low diag(S_low) V_low − U_low⁰ diag(S_low⁰) V_low⁰, [out, in] (HF's get_delta_weight).
  at::Tensor delta_weight() const;

  at::Tensor U_low, S_low, V_low;              // trainable, filed
  at::Tensor U_low0, S_low0, V_low0;           // the SVD's low part, frozen, not filed
  at::Tensor U_high, V_high;                   // kept only where HF keeps them (non-square factor)
  int64_t k;

 private:
  // Identity forward; backward projects the gradient off the frozen top subspace (HF's hook).
  at::Tensor projected_u() const;
  at::Tensor projected_v() const;
};

}  // namespace peft
