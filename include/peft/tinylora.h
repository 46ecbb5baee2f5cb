// TinyLoRA (HF PEFT 0.21's TINYLORA, "Learning to Reason in 13 Parameters"): LoRA-XS with the
// trained r x r matrix replaced by a tiny vector v [u] through fixed random projections:
//   A = √Sᵣ · Vhᵣ [r, in],  B = Uᵣ · √Sᵣ [out, r]   (frozen, torch.linalg.svd of the fp32
//   weight; Conv1D's transposed, an Embedding's table [vocab, dim] as it is; r clipped to
//   the weight's smaller dimension),
//   R = Σᵢ vᵢ Pᵢ [r, r],  P [u, r, r] ~ N(0, 1/r) from torch.Generator().manual_seed(
//   projection_seed + the layer's index among the adapter's targets, in module order),
//   y = base(x) + ((x Aᵀ) Rᵀ) Bᵀ;  an Embedding adds B[x] R A;  ΔW = B R A.
// weight_tying groups consecutive targets that share one v (HF's _create_and_replace:
// num_groups = max(1, round(n · (1 − weight_tying))), group_size = max(1, n / num_groups),
// group = min(index / group_size, num_groups − 1)). The file holds each v once,
// "base_model.tinylora_v.<group>", each layer's A and B, and its P with save_projection
// (otherwise P is drawn again from the seed). v starts at zeros (init_weights true: the
// adapter starts at the base), U(±init_v_bound) ("uniform"), or as left by torch.empty
// (false; zeros here).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "peft/tuner.h"

namespace peft {

struct TinyLoraConfig : AdapterConfig {
  int64_t r = 2;
  int64_t u = 64;
  double weight_tying = 0.0;  // 0: a v per layer; 1: one v for all
  uint64_t projection_seed = 42;
  bool save_projection = true;
  double init_v_bound = 0.02;
  double tinylora_dropout = 0.0;
  bool fan_in_fan_out = false;     // kept for the file; the host layer knows its own layout
  std::string bias = "none";       // none, all, tinylora_only: which biases train
  std::string init_weights = "true";  // "true" (zeros), "uniform", "false"

  static TinyLoraConfig from_json(const nlohmann::ordered_json& j, const std::string& where,
                                  std::vector<std::string>* unknown_keys = nullptr);
  std::string peft_type() const override { return "TINYLORA"; }
  std::unique_ptr<AdapterConfig> clone() const override { return std::make_unique<TinyLoraConfig>(*this); }
  nlohmann::ordered_json to_json() const override;
  // Null target_modules take HF's table for the model type (LoRA's).
  void resolve(const Model& model) override;
  // The targets, each one's index (its projection seed) and group (its v).
  NamedModules layer_targets(Model& model) const override;
  std::shared_ptr<LayerAdapter> make_layer_adapter(const std::string& path, Module& module,
                                                   at::Generator& gen) const override;
  std::vector<std::string> trained_base_parameters(Model& model, const std::set<std::string>& adapted) const override;

  // The adapter being built (set by layer_targets): per target its index and shared v.
  struct Plan;

 private:
  mutable std::shared_ptr<Plan> plan_;
};

// One group's trainable vector, shared by address among the group's layers.
struct TinyLoraVector {
  at::Tensor v;  // [u], fp32
  std::string key;  // "base_model.tinylora_v.<group>"
};

class TinyLoraLayer : public LayerAdapter {
 public:
  // A and B from the host's weight (HF's _init_svd), P drawn from `seed`. `file_prefix` is
  // "<key prefix><path>." (A, B and, with save_projection, P are filed under it).
  TinyLoraLayer(AdaptableLayer* host, const TinyLoraConfig& c, std::shared_ptr<TinyLoraVector> vector,
                uint64_t seed, std::string file_prefix);
  std::string type_name() const override { return "TinyLoraLayer"; }
  at::Tensor forward(const at::Tensor& x, const at::Tensor& out) override;
  void merge() override;
  void unmerge() override;
  std::vector<at::Tensor*> trainable_slots() override { return {&vector_->v}; }
  std::vector<SharedSlot> shared_slots() override;
  // R = Σᵢ vᵢ Pᵢ [r, r] (HF's _compute_R).
  at::Tensor R() const;
  // B R A, fp32, in the layout of the base weight as stored (HF's get_delta_weight:
  // [out, in] for Linear, [in, out] for Conv1D, [vocab, dim] for an Embedding).
  at::Tensor delta_weight() const;
  const at::Tensor& v() const { return vector_->v; }
  const std::string& v_key() const { return vector_->key; }

  at::Tensor A, B;  // frozen, [r, in] and [out, r] (an Embedding's: [r, dim], [vocab, r])
  at::Tensor P;     // frozen, [u, r, r]
  int64_t r;        // the rank after clipping
  double dropout;
  bool embedding;
  bool save_projection;

 private:
  std::shared_ptr<TinyLoraVector> vector_;
  std::string file_prefix_;
};

}  // namespace peft
