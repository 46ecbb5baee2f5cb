// Fused checkpoint tensors that transformers 5 splits on load (its conversion mapping's
// Chunk operations) and fuses again on save: DINOv2's SwiGLU stores gate_proj and up_proj
// stacked as mlp.weights_in (with weights_out for down_proj). Other models pass through.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>

#include "io/checkpoint_reader.h"
#include "peft/safetensors.h"

namespace peft {

// A reader that shows each "<p>.mlp.weights_in.{weight,bias}" as "<p>.mlp.gate_proj.*"
// (the first half of dim 0) and "<p>.mlp.up_proj.*" (the second), read on get(); an odd
// first dimension is an error naming the key.
std::unique_ptr<CheckpointReader> with_split_keys(std::unique_ptr<CheckpointReader> ck);

// What save_pretrained writes for a model with this config.json: gate_proj and up_proj
// fused back into weights_in, as transformers writes them.
NamedTensors to_fused_keys(const nlohmann::json& config, NamedTensors tensors);

}  // namespace peft
