// Adaption prompts: HF PEFT's AdaptedAttention / AdaptedAttentionGPT as an extension of
// each adapted attention module (src/models/attention.h, ExtensibleAttention).
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <vector>

#include "models/attention.h"
#include "peft/adaptable.h"
#include "peft/model.h"

namespace peft {

// An adapter's prompts and gates, one per adapted attention module. An input adapter, so
// that PeftModel installs it only while the adapter is active and enabled: prepare() points
// its modules' extensions at it, and each extension adds nothing unless its adapter is
// the model's input adapter (another adapter's, or none, may be installed later).
class AdaptionPrompts : public InputAdapter {
 public:
  // One adapted attention module. Llama-style: k, v, o are k_proj, v_proj, o_proj; GPT-2:
  // k is c_attn (keys and values split from its output), v and o are null.
  struct Layer : AttentionExtension {
    AdaptionPrompts* owner = nullptr;
    ExtensibleAttention* attention = nullptr;
    AdaptableLayer *k = nullptr, *v = nullptr, *o = nullptr;
    at::Tensor prompt, gate;  // [1, adapter_len, hidden], [1]
    at::Tensor extra_output(const at::Tensor& hidden, const at::Tensor& q) override;
  };

  AdaptionPrompts(Model& model, int64_t head_dim);
  ~AdaptionPrompts() override;
  std::string type_name() const override { return "AdaptionPrompts"; }
  int64_t prepare(Model& model, ModelInputs& in) override;
  // Registers a layer's tensors under their adapter-file keys.
  void add_layer(std::unique_ptr<Layer> layer, const std::string& key_prefix);

  std::vector<std::unique_ptr<Layer>> layers;
  int64_t head_dim;

 private:
  Model* model_;
};

}  // namespace peft
