// MoLE: a mixture of LoRA experts with a trained router (docs/MOLE.md). Existing LoRA
// adapters trained on the same base are the experts; each targeted layer gets a router
// (a linear gate on the layer input, no bias) that mixes them per token:
//
//   out = base(x) + sum_{i in topk(x)} g_i(x) * scaling_i * B_i A_i x,
//   g = softmax(x W_r^T) restricted to the top-k experts and renormalized (Mixtral's
//   convention; equal to a softmax over the selected logits). top_k = n is a dense softmax.
//
// While training, each layer also computes the Switch / Mixtral load-balancing loss of its
// router; LayerAdapter::aux_loss() hands router_aux_loss_coef times it to the trainer.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "peft/tuner.h"

namespace peft {

struct LoraConfig;

// One expert: its LoRA config and, where it is referenced by folder, its factors file.
struct MoleExpert {
  std::string name;
  std::string dir;                      // absolute folder; "" when embedded in the MoLE file
  std::shared_ptr<const LoraConfig> lora;
  nlohmann::ordered_json lora_json;     // its adapter_config.json (embedded configs keep it)
};

struct MoleConfig : AdapterConfig {
  std::vector<MoleExpert> experts;  // sorted by name: router row i is experts[i]
  int64_t top_k = 2;
  double router_aux_loss_coef = 0.0;
  bool trainable_experts = false;
  bool embed_experts = false;  // factors saved in adapter_model.safetensors (implied by trainable_experts)
  double router_init_std = 0.02;

  // `experts` maps names to adapter folders (relative to the folder of the file `where`
  // names, else to the working directory) or to embedded LoRA configs.
  static MoleConfig from_json(const nlohmann::ordered_json& j, const std::string& where,
                              std::vector<std::string>* unknown_keys = nullptr);
  std::string peft_type() const override { return "MOLE"; }
  std::unique_ptr<AdapterConfig> clone() const override { return std::make_unique<MoleConfig>(*this); }
  nlohmann::ordered_json to_json() const override;
  // Default targets: every module some expert adapts.
  NamedModules layer_targets(Model& model) const override;
  std::shared_ptr<LayerAdapter> make_layer_adapter(const std::string& path, Module& module,
                                                   at::Generator& gen) const override;
  bool mergeable() const override { return false; }  // the mixture depends on each token
  bool embedded() const { return embed_experts || trainable_experts; }
  int64_t n_experts() const { return static_cast<int64_t>(experts.size()); }

  std::string where;  // the file or key this config came from, for errors

 private:
  // Expert name -> the layers it adapts, found by layer_targets for make_layer_adapter.
  mutable std::shared_ptr<std::map<std::string, std::set<std::string>>> targeted_;
};

// The MoLE adapter of one Linear layer. Experts absent from the layer contribute nothing.
class MoleLayer : public LayerAdapter {
 public:
  struct Factors {
    std::string name;
    at::Tensor A, B;  // [r, in], [out, r]; undefined where the expert skips this layer
    double scaling = 0;
  };
  MoleLayer(AdaptableLayer* host, const MoleConfig& cfg, std::vector<Factors> experts);
  std::string type_name() const override { return "MoleLayer"; }
  at::Tensor forward(const at::Tensor& x, const at::Tensor& out) override;
  void merge() override;
  void unmerge() override {}
  std::vector<at::Tensor*> trainable_slots() override;
  at::Tensor aux_loss() const override { return aux_; }

  // The gates of each token ([..., n_experts]: zero outside its top-k) and the router
  // logits they came from.
  at::Tensor gates(const at::Tensor& logits) const;
  at::Tensor router_logits(const at::Tensor& x) const;
  // Switch / Mixtral load-balancing loss of one layer's logits [tokens, n_experts]
  // (transformers' load_balancing_loss_func without an attention mask).
  static at::Tensor balance_loss(const at::Tensor& logits, int64_t top_k);

  at::Tensor router;  // mole_router.weight [n_experts, in]
  std::vector<Factors> experts;

 private:
  int64_t top_k_;
  double aux_coef_;
  bool trainable_experts_;
  at::Tensor aux_;  // coef * balance loss of the last forward (undefined when coef is 0)

  // The experts' factors stacked along the rank, each rank column's expert and scaling.
  struct Stacked {
    at::Tensor a, b;       // [R, in], [out, R]; undefined when no expert adapts this layer
    at::Tensor expert;     // [R] long: the expert of each rank column
    at::Tensor scale;      // [R] float: that expert's scaling
    std::vector<std::pair<const void*, int64_t>> key;  // the factors' identities, versions, scalings
  };
  Stacked stack_experts(const at::Device& device) const;
  // stack_experts(), kept across forwards while no factor changes (identity or in-place
  // version) and no gradient has to flow into the factors. Safe for concurrent forwards.
  std::shared_ptr<const Stacked> stacked(const at::Device& device);
  std::mutex stacked_mutex_;
  std::shared_ptr<const Stacked> stacked_;
};

}  // namespace peft
