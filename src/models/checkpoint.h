// Gradient checkpointing of one transformer block: run it without keeping activations,
// recompute them during backward. Used when ModelInputs::checkpoint_layers is set.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>

namespace peft {

// y = fn(x), with fn's activations recomputed in backward (the RNG state is replayed so
// dropout masks repeat). Gradients reach x and every parameter fn uses.
at::Tensor checkpointed(const std::function<at::Tensor(const at::Tensor&)>& fn, const at::Tensor& x);

// Clears the closures kept for pending backward passes (call after backward).
void release_checkpoints();

}  // namespace peft
