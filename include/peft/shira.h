// SHiRA (Bhardwaj et al. 2024, HF PEFT's SHIRA): a sparse high-rank adapter. A layer's
// weight change is zero but at n = r * (in + out) fixed positions, which train:
//   dW [out, in] = 0 except dW[rows[i], cols[i]] = shira_weight[i] * scaling
// HF's mask_type "random" picks the positions as the first n of torch.randperm(out * in)
// from a CPU generator seeded with random_seed (torch's default seed when null), in
// row-major order (torch.where of the mask). Unlike FourierFT the positions are saved:
// "<layer>.shira_indices" (int32 [2, n], rows then columns) sits beside
// "<layer>.shira_weight", and loading takes the file's (any mask_type).
#pragma once

#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "peft/tuner.h"

namespace peft {

struct ShiraConfig : AdapterConfig {
  int64_t r = 32;
  std::string mask_type = "random";  // other values: positions only from an adapter file
  std::optional<uint64_t> random_seed;  // null: torch.Generator()'s default seed
  bool fan_in_fan_out = false;  // kept for the file; HF SHiRA adapts nn.Linear only
  bool init_weights = true;     // true: zeros (the base model); false: N(0, 1) (HF's testing init)

  static ShiraConfig from_json(const nlohmann::ordered_json& j, const std::string& where,
                               std::vector<std::string>* unknown_keys = nullptr);
  std::string peft_type() const override { return "SHIRA"; }
  std::unique_ptr<AdapterConfig> clone() const override { return std::make_unique<ShiraConfig>(*this); }
  nlohmann::ordered_json to_json() const override;
  // Null target_modules take HF's table for the model type (LoRA's).
  void resolve(const Model& model) override;
  NamedModules layer_targets(Model& model) const override;
  std::shared_ptr<LayerAdapter> make_layer_adapter(const std::string& path, Module& module,
                                                   at::Generator& gen) const override;
};

// Sorted flat indices into an [out, in] weight as int32 [2, n] rows and columns (the
// positions layout SHiRA and SPARSE_FT file).
at::Tensor row_major_positions(const at::Tensor& sorted_flat, int64_t in);

// HF's mask_functions.random_mask as positions: rows and columns (int32 [2, n], row-major
// order) of the first n entries of randperm(out * in) drawn with `seed`.
at::Tensor shira_random_indices(int64_t out, int64_t in, int64_t n, std::optional<uint64_t> seed);

class ShiraLayer : public LayerAdapter {
 public:
  // `indices_key`: the adapter file key of this layer's positions; `indices` int32 [2, n]
  // (or all -1: unknown until an adapter file supplies them). `method` and `weight_name`
  // name the values' method in errors and their file key (SPARSE_FT files them too).
  ShiraLayer(AdaptableLayer* host, at::Tensor indices, std::string indices_key, std::string method = "SHIRA",
             const std::string& weight_name = "shira_weight");
  std::string type_name() const override { return "ShiraLayer"; }
  at::Tensor forward(const at::Tensor& x, const at::Tensor& out) override;
  void merge() override;
  void unmerge() override;
  bool set_scale(double multiplier) override;
  std::vector<at::Tensor*> trainable_slots() override { return {&weight}; }
  // The positions are filed under the layer's own key but are no parameter (HF counts
  // none): a shared slot saves and loads them without counting them.
  std::vector<SharedSlot> shared_slots() override { return {{indices_key_, &indices}}; }
  at::Tensor delta_weight();  // [out, in], fp32

  at::Tensor weight;   // shira_weight [n]
  at::Tensor indices;  // shira_indices int32 [2, n]
  double scaling = 1.0;

 private:
  // indices as int64 rows / columns on `device`, checked to lie inside the weight once per
  // indices tensor (loading replaces it).
  std::pair<at::Tensor, at::Tensor> positions(at::Device device);
  std::string indices_key_, method_;
  at::Tensor checked_;  // the indices tensor rows_ / cols_ were made from (held: no reuse)
  at::Tensor rows_, cols_;
  std::mutex positions_mutex_;  // concurrent forwards (serving) may fill the cache at once
};

}  // namespace peft
