// FRoD (HF PEFT 0.21's FROD): each targeted layer's weight is rewritten in a basis V [in, in]
// that every layer of one role ("self_attn_q_proj") shares, and the adapted weight is
//   W' = U (S + diag(lambda_l)) V^T
// with U = W V^-T column-normalized (frozen, never filed), lambda_l [in] the column norms
// (trained) and S a sparse [in, in] off-diagonal matrix whose COO values are trained (zero
// at init, so W' = W). V is HF's "hierarchical joint decomposition" of the role's stacked
// weights (an SVD when they have fewer rows than columns, else QR + a ridge-regularized
// eigh); S's positions are drawn with randperm from projection_prng_key, role by role in
// sorted order. V and S's positions are filed once per role ("base_model.frod_V.<role>").
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "peft/tuner.h"

namespace peft {

// The frozen tensors one role's layers share.
struct FrodProjection {
  at::Tensor V;        // [in, in], float32
  at::Tensor indices;  // [2, nnz], int64: (row, col) of S's trained values
  at::Tensor size;     // [2], int64: (in, in)
  std::string role;    // HF's _category_from_key
  bool saved = true;   // save_projection: filed (and read back) with the adapter
  uint64_t key = 0;    // projection_prng_key
};

// HF's _category_from_key and _layer_index_from_key.
std::string frod_role(const std::string& path);
int64_t frod_layer_index(const std::string& path, int64_t fallback);
// HF's _projection_from_weights: V for the role's weights [out, in] in layer order, float32.
at::Tensor frod_basis(const std::vector<at::Tensor>& weights, double regularization_alpha);

struct FrodConfig : AdapterConfig {
  uint64_t projection_prng_key = 0;
  bool save_projection = true;
  double frod_dropout = 0.0;
  bool fan_in_fan_out = false;  // kept for the file; the host layer knows its own layout
  std::string bias = "none";    // none, all, frod_only: which biases train
  bool init_weights = true;     // false: S ~ N(0, 0.1²), lambda_l += N(0, 0.1²)
  double sparse_rate = 0.01;    // S's share of the in² - in off-diagonal positions
  double regularization_alpha = 1e-3;
  bool progressbar = true;                    // kept for the file
  bool runtime_offload_base_weight = false;   // kept for the file (a device-memory option)

  static FrodConfig from_json(const nlohmann::ordered_json& j, const std::string& where,
                              std::vector<std::string>* unknown_keys = nullptr);
  std::string peft_type() const override { return "FROD"; }
  std::unique_ptr<AdapterConfig> clone() const override { return std::make_unique<FrodConfig>(*this); }
  nlohmann::ordered_json to_json() const override;
  // Null target_modules take HF's table (VeRA's, plus ViT's query/value).
  void resolve(const Model& model) override;
  // The targets, and every role's projection from their weights (src/tuners/frod/model.cpp).
  NamedModules layer_targets(Model& model) const override;
  std::shared_ptr<LayerAdapter> make_layer_adapter(const std::string& path, Module& module,
                                                   at::Generator& gen) const override;
  std::vector<std::string> trained_base_parameters(Model& model, const std::set<std::string>& adapted) const override;

 private:
  // The projections of the adapter being built, by role: layer_targets makes them.
  mutable std::map<std::string, std::shared_ptr<FrodProjection>> projections_;
};

class FrodLayer : public LayerAdapter {
 public:
  FrodLayer(AdaptableLayer* host, std::shared_ptr<FrodProjection> projection, double dropout);
  std::string type_name() const override { return "FrodLayer"; }
  at::Tensor forward(const at::Tensor& x, const at::Tensor& out) override;
  void merge() override;
  void unmerge() override;
  std::vector<at::Tensor*> trainable_slots() override { return {&lambda_l, &s_values}; }
  std::vector<SharedSlot> shared_slots() override;
  bool reads_host_weight() const override { return true; }
  // W' − W as [out, in], fp32 (HF's get_delta_weight).
  at::Tensor delta_weight() const;
  // U [out, in] and the initial lambda_l [in] for `w` [out, in] (HF's _calculate_frod_u_and_lambda).
  static std::pair<at::Tensor, at::Tensor> u_and_lambda(const at::Tensor& V, const at::Tensor& w);
  // U and lambda_l from the host's weight (HF's init).
  void init_from_weight();
  // U for the current V (recomputed from the base weight when loading replaced V).
  const at::Tensor& U() const;
  const FrodProjection& projection() const { return *projection_; }

  at::Tensor lambda_l, s_values;  // [in], [nnz]
  double dropout;

 private:
  at::Tensor base_weight() const;  // [out, in] fp32, as before any merge
  at::Tensor sparse_times(const at::Tensor& z) const;  // z S^T
  std::shared_ptr<FrodProjection> projection_;
  mutable at::Tensor U_;
  mutable const void* U_of_ = nullptr;  // the V storage U_ was computed for
  at::Tensor weight_before_merge_;
};

}  // namespace peft
