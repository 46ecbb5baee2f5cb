// Mixture-of-experts checkpoints as transformers 5 reads and writes them: in memory the
// experts are stacked 3-D parameters (mlp.experts.gate_up_proj, mlp.experts.down_proj),
// while save_pretrained writes, and the Hub holds, one tensor per expert
// (experts.N.<matrix>.weight). These apply transformers' conversion
// mapping for Mixtral (w1 / w3 / w2 under block_sparse_moe) and Qwen2/Qwen3-MoE (gate_proj /
// up_proj / down_proj) both ways; other models pass through unchanged.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>

#include "io/checkpoint_reader.h"
#include "peft/safetensors.h"

namespace peft {

// A reader that shows a per-expert checkpoint under the stacked names (stacking on
// get()); checkpoints already stacked are shown as they are. A missing expert tensor is
// an error naming it.
std::unique_ptr<CheckpointReader> with_stacked_experts(std::unique_ptr<CheckpointReader> ck);

// The tensors save_pretrained writes for a model with this config.json: stacked experts
// split back into transformers' per-expert keys.
NamedTensors to_per_expert_keys(const nlohmann::json& config, NamedTensors tensors);

}  // namespace peft
