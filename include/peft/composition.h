// Run-time composition of several loaded adapters (docs/COMPOSITION.md).
//
// A composition replaces the default fold of an AdaptableLayer (each active adapter
// applied to the output so far) with another way of combining the adapters it names:
//  - stack          (AdapterHub's Stack): each adapter on the previous one's output;
//  - average / fuse out = base + sum_i w_i (a_i(x, base) - base), w fixed or trained;
//  - adapter_fusion (Pfeiffer et al. 2021, AdapterFusion): per layer, attention of the
//                   base output over the bottleneck adapters' outputs, Q/K/V trained.
// PeftModel::set_composition puts one LayerComposition on every layer that carries one
// of the adapters; the model code never sees it. Per-input-row switching between
// adapters is PeftModel::forward_mixed (a MixedBatch), not a composition.
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "peft/adaptable.h"

namespace peft {

struct CompositionConfig {
  std::string kind;                   // "composition": stack | average | fuse | adapter_fusion
  std::vector<std::string> adapters;  // loaded adapters, in order (stack order; weight order)
  std::vector<double> weights;        // fuse: one per adapter (default 1/n); average: 1/n
  bool trainable_weights = false;     // average / fuse: the weight vector is trained
  double temperature = 1.0;           // adapter_fusion: softmax temperature T
  bool train_adapters = false;        // the adapters themselves train too (default frozen)

  // Unknown keys and wrong values are errors naming the key ("<where>: ...").
  static CompositionConfig from_json(const nlohmann::ordered_json& j, const std::string& where);
  nlohmann::ordered_json to_json() const;
  // Whether the composition has tensors of its own (saved in composition_model.safetensors).
  bool has_parameters() const { return kind == "adapter_fusion" || trainable_weights; }
};

// How one layer combines its adapters. Registered slot names are the keys below the
// layer's path in composition_model.safetensors ("adapter_fusion.query.weight").
class LayerComposition : public Module {
 public:
  // `adapters` is aligned with adapter_names(): nullptr where this layer lacks one. `in`
  // is the layer input (after the adapters' transform_input), `base_out` the base output.
  virtual at::Tensor forward(const at::Tensor& in, const at::Tensor& base_out,
                             const std::vector<LayerAdapter*>& adapters) = 0;
  // The tensors an optimizer updates (PeftModel sets their requires_grad).
  virtual std::vector<at::Tensor*> trainable_slots() { return {}; }
  const std::vector<std::string>& adapter_names() const { return names_; }
  // What AdaptableLayer::forward does while this composition is set on `host`.
  at::Tensor run(AdaptableLayer& host, const at::Tensor& x);

 protected:
  explicit LayerComposition(std::vector<std::string> names) : names_(std::move(names)) {}
  std::vector<std::string> names_;
};

// The composition for one layer. `weights` ([n] float, shared by every layer of a model)
// is read by average / fuse; adapter_fusion initializes its Q/K from `gen`.
std::shared_ptr<LayerComposition> make_layer_composition(const CompositionConfig& cfg, AdaptableLayer& host,
                                                         const at::Tensor* weights, at::Generator& gen);

// A composition set on a model: the config, the shared weight vector and the layers.
struct ActiveComposition {
  CompositionConfig config;
  at::Tensor weights;  // [n]; average / fuse
  struct Layer {
    std::string path;
    AdaptableLayer* host;
    std::shared_ptr<LayerComposition> composition;
  };
  std::vector<Layer> layers;  // every layer carrying one of the adapters, in model order
};

}  // namespace peft
