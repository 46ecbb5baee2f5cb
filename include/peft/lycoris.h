// LoHa and LoKr (the LyCORIS family, HF PEFT's LOHA / LOKR): the weight change of a
// Linear layer as a Hadamard product of two low-rank products, or as a Kronecker product
// of two small factors. Both add x dW^T to the output and merge as W + dW.
#pragma once

#include <optional>

#include "peft/tuner.h"

namespace peft {

// What LoHa and LoKr configs share (HF's LycorisConfig).
struct LycorisConfig : AdapterConfig {
  int64_t r = 8;
  double alpha = 8;
  bool init_weights = true;  // dW = 0 at the start (one factor zero); false: all random
  NamedModules layer_targets(Model& model) const override;
  double scaling() const { return alpha / static_cast<double>(r); }
};

struct LoHaConfig : LycorisConfig {
  static LoHaConfig from_json(const nlohmann::ordered_json& j, const std::string& where,
                              std::vector<std::string>* unknown_keys = nullptr);
  std::string peft_type() const override { return "LOHA"; }
  std::unique_ptr<AdapterConfig> clone() const override { return std::make_unique<LoHaConfig>(*this); }
  nlohmann::ordered_json to_json() const override;
  std::shared_ptr<LayerAdapter> make_layer_adapter(const std::string& path, Module& module,
                                                   at::Generator& gen) const override;
};

struct LoKrConfig : LycorisConfig {
  bool decompose_both = false;   // factor w1 as well (w1_a w1_b) when r is small enough
  int64_t decompose_factor = -1; // factorization target (-1: near the square root)
  static LoKrConfig from_json(const nlohmann::ordered_json& j, const std::string& where,
                              std::vector<std::string>* unknown_keys = nullptr);
  std::string peft_type() const override { return "LOKR"; }
  std::unique_ptr<AdapterConfig> clone() const override { return std::make_unique<LoKrConfig>(*this); }
  nlohmann::ordered_json to_json() const override;
  std::shared_ptr<LayerAdapter> make_layer_adapter(const std::string& path, Module& module,
                                                   at::Generator& gen) const override;
};

// An adapter defined by its weight change dW [out, in] on a Linear layer.
class DeltaWeightAdapter : public LayerAdapter {
 public:
  at::Tensor forward(const at::Tensor& x, const at::Tensor& out) override;
  void merge() override;
  void unmerge() override;
  virtual at::Tensor delta_weight() const = 0;
  bool set_scale(double multiplier) override;
  double scaling = 1.0;

 protected:
  using LayerAdapter::LayerAdapter;

 private:
  std::optional<double> unscaled_;  // scaling before the first set_scale
};

// dW = (w1_a w1_b) * (w2_a w2_b) * scaling (elementwise product).
class LoHaLayer : public DeltaWeightAdapter {
 public:
  LoHaLayer(AdaptableLayer* host, int64_t r);
  std::string type_name() const override { return "LoHaLayer"; }
  at::Tensor delta_weight() const override;
  std::vector<at::Tensor*> trainable_slots() override { return {&w1_a, &w1_b, &w2_a, &w2_b}; }
  at::Tensor w1_a, w1_b, w2_a, w2_b;  // [out, r], [r, in], [out, r], [r, in]
};

// dW = kron(w1, w2) * scaling with w1 [out_l, in_m] and w2 [out_k, in_n], each either
// full or a rank-r product, by HF's rules for the factorization of out and in.
class LoKrLayer : public DeltaWeightAdapter {
 public:
  LoKrLayer(AdaptableLayer* host, int64_t r, bool decompose_both, int64_t decompose_factor);
  std::string type_name() const override { return "LoKrLayer"; }
  at::Tensor delta_weight() const override;
  std::vector<at::Tensor*> trainable_slots() override;
  at::Tensor w1, w1_a, w1_b, w2, w2_a, w2_b;  // the defined ones are parameters
  bool full_w1, full_w2;
};

// HF PEFT's factorization(): dimension = m * n with m <= n, m near `factor` (or the square root).
std::pair<int64_t, int64_t> lokr_factorization(int64_t dimension, int64_t factor = -1);

}  // namespace peft
