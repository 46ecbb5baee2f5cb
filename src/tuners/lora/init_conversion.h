// HF PEFT's save_pretrained(path_initial_model_for_weight_conversion): inits that move part
// of the base weight into the adapter (PiSSA, OLoRA, CorDA, LoRA-GA) train an adapter that belongs
// to the residual base W - s B0 A0. Written as a plain LoRA of the original base instead:
//   ΔW = s (B A - B0 A0) = s' [B | -B0] [A ; A0],   rank 2r, s' = s
// (lora_alpha doubled, or times √2 with rsLoRA; rank and alpha patterns doubled), so the
// file works on the unmodified base in any tool.
#pragma once

#include <memory>
#include <string>

#include "peft/lora.h"
#include "peft/safetensors.h"

namespace peft {

// Whether `init` rewrites the base weight so that the trained adapter needs converting.
bool init_rewrites_base(const std::string& init);

// The trained adapter's tensors with each lora_A / lora_B joined to the initial ones as
// above (other tensors unchanged). Throws where a key of `trained` has no initial value.
NamedTensors lora_delta_from_init(const NamedTensors& trained, const NamedTensors& initial);

// The config of that plain LoRA: init "true", ranks doubled, the scaling kept. Refused
// (as in HF) for DoRA and for rsLoRA with rank or alpha patterns.
std::unique_ptr<LoraConfig> plain_lora_config(const LoraConfig& c);

}  // namespace peft
