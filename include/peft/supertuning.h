// Super-Tuning (HF PEFT 0.21's SUPERTUNING, arXiv:2607.09287): a sparse support of the frozen
// weight trains. Each adapted Linear keeps n = int(out * in * (1 - sparsity)) flat positions,
// chosen once from the base weight as torch.topk(|W|.flatten(), n, largest=select_top), and
// one trained value per position:
//   W' = W + scatter(values at indices)  [+ (lora_alpha / r) B A with r set: "Supra"]
// The positions are filed as "<layer>.supertuning_indices" (int32 [n], topk's order) beside
// "<layer>.supertuning_values"; with save_precomputed_indices false they are not filed and
// are chosen again from the base weight when the adapter loads (as HF).
#pragma once

#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "peft/tuner.h"

namespace peft {

struct SupertuningConfig : AdapterConfig {
  double sparsity = 0.99;               // in [0, 1): the share of each weight that stays frozen
  bool select_top = true;               // keep the largest |W| (false: the smallest)
  std::optional<int64_t> r;             // Supra's LoRA rank; none: the sparse support only
  std::optional<double> lora_alpha;     // none with r set: 2 r (HF writes it to the file)
  double lora_dropout = 0.0;            // on the input of the LoRA term
  bool init_weights = true;             // values and B zero (the base model); false: values ~ N(0, 1)
  bool save_precomputed_indices = true;

  static SupertuningConfig from_json(const nlohmann::ordered_json& j, const std::string& where,
                                     std::vector<std::string>* unknown_keys = nullptr);
  std::string peft_type() const override { return "SUPERTUNING"; }
  std::unique_ptr<AdapterConfig> clone() const override { return std::make_unique<SupertuningConfig>(*this); }
  nlohmann::ordered_json to_json() const override;
  // Null target_modules take HF's table for the model type (LoRA's).
  void resolve(const Model& model) override;
  NamedModules layer_targets(Model& model) const override;
  std::shared_ptr<LayerAdapter> make_layer_adapter(const std::string& path, Module& module,
                                                   at::Generator& gen) const override;
};

class SupertuningLayer : public LayerAdapter {
 public:
  // `indices` int32 [n]: flat positions in the [out, in] weight; `indices_key` their file
  // key (empty: not filed); rank 0: no LoRA term.
  SupertuningLayer(AdaptableLayer* host, at::Tensor indices, std::string indices_key, int64_t rank,
                   double lora_alpha, double dropout);
  std::string type_name() const override { return "SupertuningLayer"; }
  at::Tensor forward(const at::Tensor& x, const at::Tensor& out) override;
  void merge() override;
  void unmerge() override;
  std::vector<at::Tensor*> trainable_slots() override;
  // The positions are filed under the layer's key but are no parameter (HF counts none).
  std::vector<SharedSlot> shared_slots() override;
  bool files_indices() const { return !indices_key_.empty(); }
  at::Tensor delta_weight() const;  // [out, in], fp32: the sparse values plus the LoRA term

  at::Tensor values;   // supertuning_values [n]
  at::Tensor indices;  // supertuning_indices int32 [n]
  at::Tensor lora_A, lora_B;  // [r, in], [out, r] (undefined with rank 0)
  int64_t rank;
  double scaling, dropout;  // lora_alpha / r

 private:
  at::Tensor flat_positions(at::Device device) const;
  at::Tensor sparse_delta() const;  // the values scattered into a zero [out, in] weight, fp32  // indices as int64, checked once per tensor
  std::string indices_key_;
  mutable at::Tensor checked_, positions_;
  mutable std::mutex positions_mutex_;  // concurrent forwards (serving) may fill the cache at once
};

}  // namespace peft
