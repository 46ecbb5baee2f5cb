// Layers that tuners attach to, and the adapters they attach.
//
// Rather than replacing a module with a wrapper (HF PEFT's `base_layer` indirection),
// a layer keeps its own weights and names and carries a list of named adapters; its
// forward adds the active ones. Base parameter names stay exactly transformers' names,
// so a merged model saves as a plain checkpoint, and adapter files get HF PEFT's keys
// from the adapters themselves.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "peft/module.h"

namespace peft {

class AdaptableLayer;
class LayerComposition;  // include/peft/composition.h

// One named adapter on one layer (LoRA "default" on q_proj, ...). Its parameters are
// registered under HF PEFT's key suffixes ("lora_A.weight", "lora_magnitude_vector"), so
// visit_slots() yields the adapter file's keys below the layer's path.
class LayerAdapter : public Module {
 public:
  // Returns the layer output with this adapter applied; `base_out` is the base layer's
  // output (or the output so far, when several adapters are active).
  virtual at::Tensor forward(const at::Tensor& x, const at::Tensor& out) = 0;
  // What the host layer computes on instead of x ((IA)3 on feed-forward layers scales
  // the input); the identity for most adapters.
  virtual at::Tensor transform_input(const at::Tensor& x) { return x; }
  // True where transform_input is not the identity (the host then computes on other input).
  virtual bool transforms_input() const { return false; }
  // Where forward adds exactly x A^T B^T * scale to the output (plain LoRA, no dropout),
  // its factors: mixed batches then run all such adapters of a layer as one gathered
  // shrink and one expand (SGMV style) instead of one pair of products per adapter.
  struct LowRank {
    at::Tensor A, B;  // [r, in], [out, r]
    double scale;
  };
  virtual std::optional<LowRank> low_rank() const { return std::nullopt; }
  // HF PEFT's set_scale: the adapter's contribution times `multiplier` (LoRA, LoHa, LoKr:
  // scaling = multiplier * alpha / r, always relative to the loaded value). False where
  // the method has no such scale.
  virtual bool set_scale(double multiplier) { return false; }
  // Folds the adapter into the host's weights / takes it back out.
  virtual void merge() = 0;
  virtual void unmerge() = 0;
  bool merged() const { return merged_; }
  // Parameters an optimizer should update (their requires_grad is set by the model).
  virtual std::vector<at::Tensor*> trainable_slots() = 0;
  // Frozen tensors one adapter shares among all its layers, filed once under a key of
  // their own rather than below a layer's path (VeRA's "base_model.vera_A"): PeftModel
  // saves and loads each key once. None for most methods.
  struct SharedSlot {
    std::string key;
    at::Tensor* tensor;
  };
  virtual std::vector<SharedSlot> shared_slots() { return {}; }
  // True where forward reads the host's weight (DoRA's weight norm): such a host keeps its
  // weight in full precision when training stores the frozen base in bf16.
  virtual bool reads_host_weight() const { return false; }
  // An auxiliary training loss of the last forward, already weighted by its method's
  // coefficient (MoLE's router load balancing); undefined where the adapter has none. The
  // trainer adds PeftModel::aux_loss() (these, averaged per adapter) to the task loss.
  virtual at::Tensor aux_loss() const { return {}; }
  bool training = false;  // dropout on

 protected:
  explicit LayerAdapter(AdaptableLayer* host) : host_(host) {}
  AdaptableLayer* host_;
  bool merged_ = false;
};

// A mixed-adapter batch (serving): row i of every layer input uses adapter row_adapters[i]
// ("" = the base model alone) instead of the layers' active lists. The base product runs
// once for the whole batch; each adapter then runs on its own rows. Installed for the
// length of a forward by MixedBatch::Scope (PeftModel::forward_mixed); the model code never
// sees it. A batch whose rows keep their adapters (decoding steps) can be reused: each
// layer's gathered LoRA factors are kept in it, so later forwards skip gathering them.
// Rebuild it when adapters change.
class MixedBatch {
 public:
  MixedBatch(const std::vector<std::string>& row_adapters, at::Device device);
  struct Group {
    std::string adapter;
    at::Tensor rows;  // int64 row indices on the device
    int64_t count;
  };
  const std::vector<Group>& groups() const { return groups_; }  // first-appearance order
  int64_t batch() const { return batch_; }

  class [[nodiscard]] Scope {
   public:
    explicit Scope(const MixedBatch* m);
    ~Scope();
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    const MixedBatch* prev_;
  };
  static const MixedBatch* current();  // this thread's, or nullptr

  // Plain LoRA factors of one layer gathered per row: rows [n], A^T [n, in, r_max],
  // B^T * scale [n, r_max, out] (ranks zero-padded).
  struct GatheredLowRank {
    at::Tensor rows, a_t, b_t;
  };
  GatheredLowRank* gathered(const AdaptableLayer* layer) const;  // nullptr until stored
  void store(const AdaptableLayer* layer, GatheredLowRank g) const;

 private:
  std::vector<Group> groups_;
  int64_t batch_;
  mutable std::map<const AdaptableLayer*, GatheredLowRank> gathered_;
};

// What a layer computes, as far as adapters care.
enum class LayerKind {
  kLinear,     // x W^T + b (Linear, GPT-2's Conv1D)
  kEmbedding,  // a table lookup
  kNorm,       // per-feature scale (and shift)
  kBlock,      // a composite (an MLP block) with no single weight
};

class AdaptableLayer : public Module {
 public:
  // Base output plus every active, unmerged adapter (in activation order), computed on
  // the input as the adapters' transform_input leave it.
  at::Tensor forward(const at::Tensor& x);
  virtual at::Tensor base_forward(const at::Tensor& x) = 0;
  // Feature sizes of the last input / output dimension (adapters size themselves by them).
  virtual int64_t input_dim() const = 0;
  virtual int64_t output_dim() const = 0;
  virtual LayerKind kind() const = 0;
  // The base parameters adapters read and fold into; nullptr where the layer has none (a
  // norm without bias, a block). A 2-D weight is [out, in] unless weight_is_in_out()
  // (GPT-2's Conv1D, and an embedding's [vocab, dim]); a 1-D one scales features.
  virtual at::Tensor* weight_tensor() { return nullptr; }
  virtual at::Tensor* bias_tensor() { return nullptr; }
  virtual bool weight_is_in_out() const { return false; }
  // The weight's values as a dense tensor, for adapters that read or fold into them
  // (DoRA's norm, merging, PiSSA): the stored weight itself, or a dequantized copy of a
  // 4-bit one. Undefined where the layer has no weight.
  virtual at::Tensor dense_weight();
  // Replaces the weight's values with `w` (its shape; any dtype): copied into the stored
  // weight, or quantized again where the weight is 4-bit.
  virtual void assign_weight(const at::Tensor& w);
  // base_forward computed with `weight` in place of the stored one (same layout; an
  // embedding's table may have any number of rows), so an adapter that substitutes rows
  // gets the layer's own transform around the lookup without touching the shared weight.
  // Refused where the layer does not support it.
  virtual at::Tensor forward_with_weight(const at::Tensor& x, const at::Tensor& weight);
  // True where weight_tensor() holds packed 4-bit codes rather than values.
  virtual bool weight_quantized() const { return false; }
  // Set where the weight is stored narrower than the model computes (bf16 training keeps
  // a frozen embedding table in bf16, its lookups still feed an fp32 residual stream);
  // layers whose output dtype autocast already decides ignore it.
  std::optional<at::ScalarType> compute_dtype;

  void attach(const std::string& name, std::shared_ptr<LayerAdapter> a);
  void detach(const std::string& name);
  LayerAdapter* adapter(const std::string& name) const;
  std::vector<std::string> adapter_names() const;
  std::vector<std::string> active;  // names of the adapters forward applies
  bool adapters_disabled = false;   // true: base output only
  // Set by PeftModel::set_composition: combines the adapters it names in place of the
  // active list (include/peft/composition.h).
  std::shared_ptr<LayerComposition> composition;

 private:
  at::Tensor mixed_forward(const at::Tensor& x, const MixedBatch& m);

  std::vector<std::pair<std::string, std::shared_ptr<LayerAdapter>>> adapters_;
};

}  // namespace peft
