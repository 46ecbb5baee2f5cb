// VeRA (Kopiczko et al. 2024, HF PEFT's VERA): one pair of frozen random matrices shared
// by every adapted layer, and per layer two trainable vectors that scale them:
//   out = base(x) + lambda_b * ((lambda_d * (x A^T)) B^T),  A [r, in], B [out, r]
// A and B are slices of the model-wide vera_A [r, max_in] / vera_B [max_out, r], sized to
// the largest targeted layer and drawn as HF draws them from `projection_prng_key`
// (torch.Generator + kaiming_uniform_), so a file saved without them regenerates exactly.
#pragma once

#include <memory>
#include <string>

#include "peft/tuner.h"

namespace peft {

// The shared frozen projections of one VeRA adapter.
struct VeraProjection {
  at::Tensor A, B;  // vera_A [r, max_in], vera_B [max_out, r]
  bool saved = true;  // save_projection: written to (and read from) the adapter file
};

// HF PEFT's vera_A / vera_B for `r` and the largest targeted (out, in): both drawn in that
// order from one CPU generator seeded with `key`, each U(-b, b) with b = sqrt(6 / fan_in).
VeraProjection make_vera_projection(int64_t r, int64_t max_out, int64_t max_in, uint64_t key);

struct VeraConfig : AdapterConfig {
  int64_t r = 256;
  uint64_t projection_prng_key = 0;
  bool save_projection = true;
  double vera_dropout = 0.0;
  double d_initial = 0.1;      // lambda_d's start (lambda_b starts at 0: the base model)
  bool fan_in_fan_out = false;  // kept for the file; the host layer knows its own layout
  std::string bias = "none";    // none, all, vera_only: which biases train
  bool init_weights = true;     // false: lambda_d ~ N(0, 1), lambda_b = 1 (HF's raw init)

  static VeraConfig from_json(const nlohmann::ordered_json& j, const std::string& where,
                              std::vector<std::string>* unknown_keys = nullptr);
  std::string peft_type() const override { return "VERA"; }
  std::unique_ptr<AdapterConfig> clone() const override { return std::make_unique<VeraConfig>(*this); }
  nlohmann::ordered_json to_json() const override;
  // Null target_modules take HF's table for the model type (LoRA's: q_proj, v_proj, ...).
  void resolve(const Model& model) override;
  // The targets, and the projection sized to the largest of them (src/tuners/vera/model.cpp).
  NamedModules layer_targets(Model& model) const override;
  std::shared_ptr<LayerAdapter> make_layer_adapter(const std::string& path, Module& module,
                                                   at::Generator& gen) const override;
  std::vector<std::string> trained_base_parameters(Model& model, const std::set<std::string>& adapted) const override;

 private:
  // The projection of the adapter being built: layer_targets makes it (it needs every
  // target's shape), make_layer_adapter hands it to each layer.
  mutable std::shared_ptr<VeraProjection> projection_;
};

class VeraLayer : public LayerAdapter {
 public:
  VeraLayer(AdaptableLayer* host, std::shared_ptr<VeraProjection> projection, int64_t r, double dropout);
  std::string type_name() const override { return "VeraLayer"; }
  at::Tensor forward(const at::Tensor& x, const at::Tensor& out) override;
  void merge() override;
  void unmerge() override;
  std::vector<at::Tensor*> trainable_slots() override { return {&lambda_b, &lambda_d}; }
  std::vector<SharedSlot> shared_slots() override;
  // (lambda_b B) (lambda_d A) as [out, in], fp32.
  at::Tensor delta_weight() const;

  at::Tensor lambda_b, lambda_d;  // [out], [r]
  double dropout;

 private:
  at::Tensor sliced_A() const;  // [r, in]
  at::Tensor sliced_B() const;  // [out, r]
  std::shared_ptr<VeraProjection> projection_;
};

}  // namespace peft
