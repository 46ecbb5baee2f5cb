// The keys X-LoRA's tensors go by: the experts' in their own LoRA files and as our layer
// slots (never filed: HF saves the classifier only), and the classifier's in HF's file.
#pragma once

#include <cstdint>
#include <string>

namespace peft::xlora {

// HF PEFT's LoRA files: "base_model.model.<module path>.lora_A.weight".
inline const std::string kExpertFilePrefix = "base_model.model.";

// An expert's factor on a layer, as the layer registers it ("lora_A.<i>.weight", as HF's
// lora layers hold LoRA adapter "<i>"), and its full key below the adapter's prefix.
inline std::string expert_slot_name(const std::string& factor, int64_t expert) {
  return factor + "." + std::to_string(expert) + ".weight";
}
inline std::string expert_slot_key(const std::string& path, const std::string& factor, int64_t expert) {
  return kExpertFilePrefix + path + "." + expert_slot_name(factor, expert);
}

// HF's file keys of the classifier's nn.Sequential: "<prefix><index>.weight" / ".bias".
inline const std::string kClassifierPrefix = "base_model.internal_xlora_classifier.layers.";

}  // namespace peft::xlora
