// Sparse fine-tuning (SPARSE_FT, a format of ours; diff pruning with a fixed mask, Guo et
// al. 2021, and FISH-style gradient masks, Sung et al. 2021): each target layer trains
// n = max(1, round(density * out * in)) entries of its weight, chosen once:
//   "random"     uniformly, from the adapter's seed (add_adapter / `peft train`'s seed);
//   "magnitude"  the n largest |W|;
//   "gradient"   the n largest |mean gradient of the loss| over a calibration pass on the
//                training data (`peft train` runs it on the first calibration_samples
//                examples, in training batches, as LoRA-GA's estimate).
// Ties go to the lower row-major index. dW [out, in] is zero except at those positions;
// the forward adds x dW^T, merge adds dW to the weight. The file is compact: per layer
// "<layer>.sparse_ft_values" [n] and "<layer>.sparse_ft_indices" (int32 [2, n], rows then
// columns, row-major order) — SHiRA's layout, so the arithmetic is ShiraLayer's.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "peft/tuner.h"

namespace peft {

struct SparseFtConfig : AdapterConfig {
  double density = 0.01;
  std::string mask_type = "magnitude";  // random | magnitude | gradient
  int64_t calibration_samples = 64;     // "gradient": training examples in the calibration pass
  bool init_weights = true;             // true: zeros (the base model); false: N(0, 0.02²)
  // "gradient": the calibration pass's mean gradient [out, in] by module path; set by
  // `peft train` (or sparse_ft_gradients) before the adapter is made.
  std::shared_ptr<const std::map<std::string, at::Tensor>> calibration;
  bool positions_from_file = false;  // set by for_loading(): the file's positions replace the mask

  static SparseFtConfig from_json(const nlohmann::ordered_json& j, const std::string& where,
                                  std::vector<std::string>* unknown_keys = nullptr);
  std::string peft_type() const override { return "SPARSE_FT"; }
  std::unique_ptr<AdapterConfig> clone() const override { return std::make_unique<SparseFtConfig>(*this); }
  nlohmann::ordered_json to_json() const override;
  // Loading takes the file's positions: no calibration needed.
  std::unique_ptr<AdapterConfig> for_loading() const override;
  // Null target_modules take HF's LoRA table for the model type.
  void resolve(const Model& model) override;
  NamedModules layer_targets(Model& model) const override;
  std::shared_ptr<LayerAdapter> make_layer_adapter(const std::string& path, Module& module,
                                                   at::Generator& gen) const override;
  // The number of trained entries of an [out, in] weight.
  int64_t entries(int64_t out, int64_t in) const;
};

// The n largest entries of `score` [out, in] (ties: lower row-major index first) as
// int32 [2, n] rows and columns in row-major order.
at::Tensor top_positions(const at::Tensor& score, int64_t n);

// The calibration of mask_type "gradient": `train_step` runs forwards and backwards with
// only the targets' weights requiring grad; returns each target's mean gradient [out, in].
std::map<std::string, at::Tensor> sparse_ft_gradients(Model& model, const SparseFtConfig& config,
                                                      const std::function<void()>& train_step);

}  // namespace peft
