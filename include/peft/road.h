// RoAd (Liao et al. 2024, HF PEFT 0.21's ROAD): 2D rotation adaptation. A Linear layer's
// output is rotated and scaled pairwise, y' = R y: within each group of group_size
// features, feature i pairs with i + group_size/2 and the pair turns by θ and scales by α
//   y'_i = y_i α cos θ − y_j α sin θ,  y'_j = y_j α cos θ + y_i α sin θ.
// road_1 shares one (θ, α) per pair (out/2 each), road_2 one per feature (out), road_4
// separate angles and scales for the cos and sin terms (2·out). Init θ = 0, α = 1 (the
// identity). Merging is W ← R W, b ← R b; unmerging inverts R.
#pragma once

#include <memory>
#include <string>

#include "peft/tuner.h"

namespace peft {

struct RoadConfig : AdapterConfig {
  std::string variant = "road_1";  // road_1 | road_2 | road_4
  int64_t group_size = 64;         // even; must divide each target's output features
  bool init_weights = true;        // true: θ = 0, α = 1; false: θ ~ N(0, 0.5²), α ~ N(1, 0.5²)

  static RoadConfig from_json(const nlohmann::ordered_json& j, const std::string& where,
                              std::vector<std::string>* unknown_keys = nullptr);
  std::string peft_type() const override { return "ROAD"; }
  std::unique_ptr<AdapterConfig> clone() const override { return std::make_unique<RoadConfig>(*this); }
  nlohmann::ordered_json to_json() const override;
  // Null target_modules take HF's table for the model type (LoRA's).
  void resolve(const Model& model) override;
  NamedModules layer_targets(Model& model) const override;
  std::shared_ptr<LayerAdapter> make_layer_adapter(const std::string& path, Module& module,
                                                   at::Generator& gen) const override;
};

class RoadLayer : public LayerAdapter {
 public:
  RoadLayer(AdaptableLayer* host, std::string variant, int64_t group_size);
  std::string type_name() const override { return "RoadLayer"; }
  at::Tensor forward(const at::Tensor& x, const at::Tensor& out) override;  // R applied to out
  void merge() override;
  void unmerge() override;
  std::vector<at::Tensor*> trainable_slots() override { return {&theta, &alpha}; }
  at::Tensor rotation() const;  // R [out, out], HF's _get_delta_weight

  at::Tensor theta, alpha;  // road_theta, road_alpha: [out/2], [out] or [2·out]
  std::string variant;
  int64_t group_size;

 private:
  std::pair<at::Tensor, at::Tensor> columns() const;  // per feature: α cos θ, α sin θ
  void apply_to_host(const at::Tensor& R);            // W ← R W, b ← R b
};

}  // namespace peft
