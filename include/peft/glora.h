// GLoRA (Chavan et al. 2023, HF PEFT 0.21's GLORA): generalized LoRA. A Linear layer's
// weight W [out, in] and bias b [out] take five learned corrections:
//   W_eff = W + W ⊙ A + B,   b_eff = b + b ⊙ D + E + W C
// each "path" parameterized as config_A_B / config_C / config_D_E say: "lora" (Xd Xu, a
// rank-r product), "vector" (one value per output row, or per input feature for C),
// "constant" (one scalar) or "none" (a filed zero buffer, never trained). C, D and E act
// only where the layer has a bias (else they are zero buffers). Init: every path zero (a
// LoRA path's Xu kaiming, Xd zero); init_weights false draws them (kaiming; scalars
// N(0, 0.02²)).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "peft/tuner.h"

namespace peft {

struct GloraConfig : AdapterConfig {
  int64_t r = 8;                     // the rank of "lora" paths
  std::string config_A_B = "lora";   // lora, vector, constant, none
  std::string config_C = "lora";     // lora, vector, none
  std::string config_D_E = "constant";  // vector, constant, none
  std::string bias = "none";         // none, all, glora_only: which biases train
  bool init_weights = true;          // true: the base's output; false: random paths

  static GloraConfig from_json(const nlohmann::ordered_json& j, const std::string& where,
                               std::vector<std::string>* unknown_keys = nullptr);
  std::string peft_type() const override { return "GLORA"; }
  std::unique_ptr<AdapterConfig> clone() const override { return std::make_unique<GloraConfig>(*this); }
  nlohmann::ordered_json to_json() const override;
  // Null target_modules take HF's table for the model type (LoRA's).
  void resolve(const Model& model) override;
  NamedModules layer_targets(Model& model) const override;
  std::shared_ptr<LayerAdapter> make_layer_adapter(const std::string& path, Module& module,
                                                   at::Generator& gen) const override;
  std::vector<std::string> trained_base_parameters(Model& model, const std::set<std::string>& adapted) const override;
};

// One of A..E: its trained tensors (Xd and Xu, or X) or its filed zero buffer.
struct GloraPath {
  enum class Kind { kLora, kVector, kConstant, kNone };
  Kind kind = Kind::kNone;
  at::Tensor Xd, Xu, X, zeros;
  // What HF's path forward returns: Xd Xu, X, X[0] (a 0-d scalar) or the buffer.
  at::Tensor value() const;
};

class GloraLayer : public LayerAdapter {
 public:
  // Builds the five paths at HF's shapes (zero); `key_prefix` ("base_model.model.<path>.")
  // files the "none" paths' buffers under HF's keys.
  GloraLayer(AdaptableLayer* host, const GloraConfig& c, const std::string& key_prefix);
  std::string type_name() const override { return "GloraLayer"; }
  at::Tensor forward(const at::Tensor& x, const at::Tensor& out) override;
  // HF folds every merged GLoRA adapter of a layer against the original W and b: merging
  // one more (or taking one out) first divides the merged ones back out.
  void merge() override;
  void unmerge() override;
  std::vector<at::Tensor*> trainable_slots() override;
  std::vector<SharedSlot> shared_slots() override;
  bool reads_host_weight() const override { return true; }

  GloraPath A, B, C, D, E;  // A, B: [out, in]-broadcast; C: [in, 1]; D, E: [out]-broadcast
  bool has_bias;            // C, D and E act only then

 private:
  std::vector<std::pair<std::string, GloraPath*>> paths();
  std::vector<SharedSlot> buffers_;
};

}  // namespace peft
