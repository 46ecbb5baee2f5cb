// CLIP-Adapter (Gao et al. 2021, "CLIP-Adapter: Better Vision-Language Models with
// Feature Adapters"): a residual MLP at the fusion point of a CLIP model, over the
// projected image (and optionally text) features before they are normalized and compared:
//   f' = alpha * A(f) + (1 - alpha) * f,   A(f) = ReLU(ReLU(f W1^T) W2^T)
// with W1 [d / reduction, d] and W2 [d, d / reduction], no biases, as the paper's code.
// The adapter sits on the projection layers (visual_projection, text_projection), so the
// model code needs nothing for it. HF PEFT has no CLIP-Adapter; the file follows its
// style: peft_type "CLIP_ADAPTER", keys base_model.model.<layer>.clip_adapter_down /
// clip_adapter_up (docs/TUNERS.md). Not mergeable: A is not linear.
#pragma once

#include "peft/tuner.h"

namespace peft {

struct ClipAdapterConfig : AdapterConfig {
  double alpha = 0.2;        // the residual ratio (the paper's best for images is 0.2)
  int64_t reduction = 4;     // the hidden width is d / reduction

  static ClipAdapterConfig from_json(const nlohmann::ordered_json& j, const std::string& where,
                                     std::vector<std::string>* unknown_keys = nullptr);
  std::string peft_type() const override { return "CLIP_ADAPTER"; }
  std::unique_ptr<AdapterConfig> clone() const override { return std::make_unique<ClipAdapterConfig>(*this); }
  nlohmann::ordered_json to_json() const override;
  bool mergeable() const override { return false; }
  // Default (no target_modules): visual_projection, the paper's image adapter.
  NamedModules layer_targets(Model& model) const override;
  std::shared_ptr<LayerAdapter> make_layer_adapter(const std::string& path, Module& module,
                                                   at::Generator& gen) const override;
};

class ClipAdapterLayer : public LayerAdapter {
 public:
  ClipAdapterLayer(AdaptableLayer* host, int64_t hidden, double alpha);
  std::string type_name() const override { return "ClipAdapterLayer"; }
  at::Tensor forward(const at::Tensor& x, const at::Tensor& out) override;
  void merge() override;
  void unmerge() override {}
  std::vector<at::Tensor*> trainable_slots() override { return {&clip_adapter_down, &clip_adapter_up}; }

  at::Tensor clip_adapter_down, clip_adapter_up;  // [hidden, d], [d, hidden]

 private:
  double alpha_;
};

}  // namespace peft
