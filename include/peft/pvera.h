// PVeRA (probabilistic VeRA, arXiv 2512.07703, HF PEFT 0.21's PVERA): VeRA whose hidden
// code is sampled. The shared frozen pvera_A has 2r rows (pvera_B r columns); per layer
// lambda_d [2r] scales both halves of x Aᵀ into a mean and a log-variance:
//   (mu, logvar) = chunk(lambda_d * (x Aᵀ), 2),  z = mu + eps * exp(logvar / 2),
//   out = base(x) + lambda_b * (z Bᵀ)
// eps ~ N(0, 1) while training (and at inference with sample_at_inference); otherwise
// z = mu, which is also what merging folds in. The projections are VeRA's, drawn by
// src/tuners/vera/projection.h from projection_prng_key.
#pragma once

#include <ATen/core/Generator.h>

#include <memory>
#include <optional>
#include <string>

#include "peft/tuner.h"
#include "peft/vera.h"

namespace peft {

struct PveraConfig : AdapterConfig {
  int64_t r = 256;
  uint64_t projection_prng_key = 0;
  bool save_projection = true;
  double pvera_dropout = 0.0;
  double d_initial = 0.1;        // all 2r entries of lambda_d start here (lambda_b at 0)
  bool fan_in_fan_out = false;   // kept for the file; the host layer knows its own layout
  std::string bias = "none";     // none, all, pvera_only: which biases train
  bool init_weights = true;      // false: lambda_d ~ N(0, 1), lambda_b = 1 (HF's raw init)
  bool sample_at_inference = false;
  std::optional<uint64_t> generator_seed;  // each layer's own CPU generator; none: the global one

  static PveraConfig from_json(const nlohmann::ordered_json& j, const std::string& where,
                               std::vector<std::string>* unknown_keys = nullptr);
  std::string peft_type() const override { return "PVERA"; }
  std::unique_ptr<AdapterConfig> clone() const override { return std::make_unique<PveraConfig>(*this); }
  nlohmann::ordered_json to_json() const override;
  // Null target_modules take HF's table (VeRA's, plus dinov2's query / value).
  void resolve(const Model& model) override;
  // The targets, and the projection sized to the largest of them (src/tuners/pvera/model.cpp).
  NamedModules layer_targets(Model& model) const override;
  std::shared_ptr<LayerAdapter> make_layer_adapter(const std::string& path, Module& module,
                                                   at::Generator& gen) const override;
  std::vector<std::string> trained_base_parameters(Model& model, const std::set<std::string>& adapted) const override;

 private:
  mutable std::shared_ptr<VeraProjection> projection_;  // made by layer_targets, as VeRA's
};

class PveraLayer : public LayerAdapter {
 public:
  PveraLayer(AdaptableLayer* host, std::shared_ptr<VeraProjection> projection, int64_t r, double dropout,
             bool sample_at_inference, std::optional<uint64_t> generator_seed);
  std::string type_name() const override { return "PveraLayer"; }
  at::Tensor forward(const at::Tensor& x, const at::Tensor& out) override;
  void merge() override;
  void unmerge() override;
  std::vector<at::Tensor*> trainable_slots() override { return {&lambda_b, &lambda_d}; }
  std::vector<SharedSlot> shared_slots() override;
  // The mean path's (lambda_b B) (lambda_d[:r] A[:r]) as [out, in], fp32 (HF's get_delta_weight).
  at::Tensor delta_weight() const;

  at::Tensor lambda_b, lambda_d;  // [out], [2r]
  double dropout;
  bool sample_at_inference;

 private:
  at::Tensor sliced_A() const;  // [2r, in]
  at::Tensor sliced_B() const;  // [out, r]
  // HF's _reparametrize: mu while evaluating (unless sample_at_inference), else mu + eps std.
  at::Tensor reparametrize(const at::Tensor& mu, const at::Tensor& logvar);
  std::shared_ptr<VeraProjection> projection_;
  std::optional<at::Generator> generator_;  // CPU, as HF's (noise drawn there, then moved)
};

}  // namespace peft
