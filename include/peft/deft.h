// DEFT (HF PEFT 0.21's DEFT): decomposed fine-tuning by projection. A trained P [out, r]
// spans a subspace of the layer's outputs; the layer's weight is taken out of that subspace
// and replaced by a trained R [r, in] there:
//   W' = (I − Q rightᵀ) W + Q (s R)
// with (Q, right) = (P, relu(P)) for decomposition "relu" or (qr(P).Q, the same) for "qr",
// and s = alpha / r (1 without alpha). PaRa (para: true) has no R: W' = (I − Q rightᵀ) W.
// Init: P ~ N(0, 0.02²) and R = rightᵀ W / s, so W' = W (init_weights false: R random).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "peft/tuner.h"

namespace peft {

struct DeftConfig : AdapterConfig {
  int64_t r = 8;                          // capped at the layer's output features
  std::optional<double> alpha;            // s = alpha / r; none (or 0): s = 1
  std::string decomposition_method = "relu";  // relu or qr
  double deft_dropout = 0.0;              // on the input of the R term
  double init_scale = 1.0;                // R ~ N(0, (0.02 · init_scale)²) when init_weights is false
  bool init_weights = true;               // R = rightᵀ W / s: the adapter starts at the base
  bool para = false;                      // PaRa: projection only, no R
  bool fan_in_fan_out = false;
  std::string bias = "none";              // none, all, deft_only: which biases train

  static DeftConfig from_json(const nlohmann::ordered_json& j, const std::string& where,
                              std::vector<std::string>* unknown_keys = nullptr);
  std::string peft_type() const override { return "DEFT"; }
  std::unique_ptr<AdapterConfig> clone() const override { return std::make_unique<DeftConfig>(*this); }
  nlohmann::ordered_json to_json() const override;
  // Null target_modules take HF's table for the model type (LoRA's).
  void resolve(const Model& model) override;
  NamedModules layer_targets(Model& model) const override;
  std::shared_ptr<LayerAdapter> make_layer_adapter(const std::string& path, Module& module,
                                                   at::Generator& gen) const override;
  std::vector<std::string> trained_base_parameters(Model& model, const std::set<std::string>& adapted) const override;
};

class DeftLayer : public LayerAdapter {
 public:
  DeftLayer(AdaptableLayer* host, int64_t r, double scaling, bool qr, bool para, double dropout);
  std::string type_name() const override { return "DeftLayer"; }
  at::Tensor forward(const at::Tensor& x, const at::Tensor& out) override;
  void merge() override;
  void unmerge() override;
  std::vector<at::Tensor*> trainable_slots() override;
  bool reads_host_weight() const override { return true; }
  // (Q, right): HF's _project, in float32.
  std::pair<at::Tensor, at::Tensor> project() const;
  // rightᵀ W [r, in] for the host's current weight (HF's _merge_factor).
  at::Tensor merge_factor() const;
  // W' − W for the weight whose factor is `factor` (HF's _delta_from_factor), [out, in].
  at::Tensor delta_from_factor(const at::Tensor& factor) const;
  at::Tensor delta_weight() const { return delta_from_factor(merge_factor()); }

  at::Tensor P, R;  // [out, r], [r, in] (R undefined with para)
  int64_t r;
  double scaling, dropout;
  bool qr, para;

 private:
  at::Tensor merged_factor_;  // the pre-merge weight's factor, so unmerge is exact (as HF's cache)
};

}  // namespace peft
