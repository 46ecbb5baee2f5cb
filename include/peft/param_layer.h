// Layers whose adapters change their parameters instead of their output: HF PEFT's
// `target_parameters` (its lora.ParamWrapper), meant for weights that are no nn.Linear,
// such as a mixture of experts' stacked expert matrices ([experts, out, in]).
//
// The layer computes with param_linear(); each active, unmerged ParamAdapter adds its
// low-rank update of the parameter slice there, as x A_e^T B_e^T * scale, so the
// update W_e + scale B_e A_e is never materialized. The model code only calls
// param_linear and never sees an adapter.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <string>
#include <vector>

#include "peft/adaptable.h"

namespace peft {

// An adapter of one or more parameters of a ParamAdaptableLayer (one per adapter name and
// layer, whichever of its parameters the config targets). forward() leaves the output
// alone: the host applies factors() inside its own computation.
class ParamAdapter : public LayerAdapter {
 public:
  at::Tensor forward(const at::Tensor&, const at::Tensor& out) override { return out; }
  // The update of slice `index` of parameter `name` (the whole parameter when it is 2-D):
  // delta = scale * B A, A [r, in], B [out, r]; nullopt where this adapter leaves it alone.
  struct SliceFactors {
    at::Tensor A, B;
    double scale;
  };
  virtual std::optional<SliceFactors> factors(const std::string& name, int64_t index) const = 0;

 protected:
  using LayerAdapter::LayerAdapter;
};

class ParamAdaptableLayer : public AdaptableLayer {
 public:
  LayerKind kind() const override { return LayerKind::kBlock; }
  // x W^T for W = slice `index` of the 3-D parameter `name` (stored [n, out, in]) or the
  // 2-D parameter itself ([out, in]; index ignored), plus every active, unmerged
  // ParamAdapter's update of that slice. Refused inside a mixed-adapter batch when an
  // adapter sits here (as HF PEFT refuses adapter_names with target_parameters), and
  // under a run-time composition.
  at::Tensor param_linear(const std::string& name, int64_t index, const at::Tensor& x);
  // The parameter adapters may target, by local name; nullptr when there is none.
  at::Tensor* parameter(const std::string& name);
  // Local names of the parameters adapters may target, in registration order (which
  // decides HF PEFT's nesting of wrappers, and so its file keys).
  std::vector<std::string> parameter_names() const;
};

}  // namespace peft
