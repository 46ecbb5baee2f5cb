// HiRA (Huang et al. 2025, HF PEFT 0.21's HIRA): high-rank adaptation. The update is the
// frozen weight itself modulated elementwise by a low-rank product:
//   ΔW = W ⊙ (B A),  y = x Wᵀ + x ΔWᵀ
// with A [r, in] and B [out, r] (an embedding's table [vocab, dim] takes B [dim, r] and
// A [r, vocab], filed as hira_embedding_A / _B). ΔW's rank is not bounded by r. Init: A
// kaiming (init_weights "gaussian": N(0, 1/r²)), B zero; embeddings A zero, B N(0, 1).
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "peft/tuner.h"

namespace peft {

struct HiraConfig : AdapterConfig {
  int64_t r = 32;
  double hira_dropout = 0.0;
  bool fan_in_fan_out = false;
  std::string init_weights = "true";  // "true", "false" (A and B random) or "gaussian"
  // regex -> r, kept in the file; HF PEFT 0.21 builds every layer with r regardless, and so
  // do we (its files hold r-sized tensors), warning when it is set.
  std::vector<std::pair<std::string, int64_t>> rank_pattern;

  static HiraConfig from_json(const nlohmann::ordered_json& j, const std::string& where,
                              std::vector<std::string>* unknown_keys = nullptr);
  std::string peft_type() const override { return "HIRA"; }
  std::unique_ptr<AdapterConfig> clone() const override { return std::make_unique<HiraConfig>(*this); }
  nlohmann::ordered_json to_json() const override;
  // Null target_modules take HF's table for the model type (LoRA's).
  void resolve(const Model& model) override;
  NamedModules layer_targets(Model& model) const override;
  std::shared_ptr<LayerAdapter> make_layer_adapter(const std::string& path, Module& module,
                                                   at::Generator& gen) const override;
};

class HiraLayer : public LayerAdapter {
 public:
  // `embedding`: the host is a lookup table (ids in, its rows out).
  HiraLayer(AdaptableLayer* host, int64_t r, double dropout, bool embedding);
  std::string type_name() const override { return "HiraLayer"; }
  at::Tensor forward(const at::Tensor& x, const at::Tensor& out) override;
  void merge() override;
  void unmerge() override;
  std::vector<at::Tensor*> trainable_slots() override { return {&A, &B}; }
  bool reads_host_weight() const override { return true; }
  at::Tensor modulation() const { return at::mm(B, A); }  // B A [out, in], HF's get_delta_weight
  at::Tensor delta_weight() const;                         // W ⊙ B A, [out, in]

  at::Tensor A, B;  // [r, in], [out, r] (an embedding: [r, vocab], [dim, r])
  int64_t r;
  double dropout;
  bool embedding;

 private:
  at::Tensor weight_before_merge_;  // HF restores the weight rather than dividing it back out
};

}  // namespace peft
