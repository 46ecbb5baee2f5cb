// Bottleneck adapters: a down-projection, a non-linearity and a zero-initialized
// up-projection, so training starts at the base model.
//  - houlsby  (Houlsby et al. 2019): serial, after the attention output projection and
//             after the feed-forward output projection: h + s * up(act(down(h)));
//  - pfeiffer (Pfeiffer et al. 2021): serial, after the feed-forward output only;
//  - parallel (AdaptFormer, Chen et al. 2022, AdaptMLP): beside the frozen MLP block,
//             MLP(x) + s * up(relu(down(x))).
// HF PEFT has none of these; our file format follows its style (docs/TUNERS.md).
#pragma once

#include "peft/tuner.h"

namespace peft {

struct BottleneckConfig : AdapterConfig {
  std::string adapter_type = "houlsby";  // houlsby | pfeiffer | parallel
  int64_t bottleneck_size = 0;           // 0: hidden size / reduction_factor
  double reduction_factor = 16;
  std::string non_linearity = "relu";    // any activation() name
  double scaling = 1.0;                  // s; AdaptFormer uses 0.1
  bool init_weights = true;              // up-projection zero; false: random (tests)

  static BottleneckConfig from_json(const nlohmann::ordered_json& j, const std::string& where,
                                    std::vector<std::string>* unknown_keys = nullptr);
  std::string peft_type() const override { return "BOTTLENECK"; }
  std::unique_ptr<AdapterConfig> clone() const override { return std::make_unique<BottleneckConfig>(*this); }
  nlohmann::ordered_json to_json() const override;
  // bottleneck_size 0: hidden size / reduction_factor, written back so files say the size.
  void resolve(const Model& model) override;
  // Default targets by architecture and adapter_type (output projections, MLP blocks).
  NamedModules layer_targets(Model& model) const override;
  std::shared_ptr<LayerAdapter> make_layer_adapter(const std::string& path, Module& module,
                                                   at::Generator& gen) const override;
  bool mergeable() const override { return false; }  // a non-linear branch
};

class BottleneckAdapter : public LayerAdapter {
 public:
  BottleneckAdapter(AdaptableLayer* host, int64_t bottleneck, bool parallel, std::string act, double scaling);
  std::string type_name() const override { return "BottleneckAdapter"; }
  at::Tensor forward(const at::Tensor& x, const at::Tensor& out) override;
  void merge() override;
  void unmerge() override {}
  std::vector<at::Tensor*> trainable_slots() override { return {&down_w, &down_b, &up_w, &up_b}; }

  at::Tensor down_w, down_b, up_w, up_b;  // adapter_down [m, d] + [m], adapter_up [d, m] + [d]
  bool parallel;
  std::string act;
  double scaling;
};

}  // namespace peft
