// Gradient checkpointing of one transformer block: run it without keeping activations,
// recompute them during backward. Used when ModelInputs::checkpoint_layers is set.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>

namespace peft {

// y = fn(x), with fn's activations recomputed in backward (the CPU and accelerator RNG
// states are replayed so dropout masks repeat). Gradients reach x and every parameter fn
// uses. What backward needs is kept in the autograd graph and freed with it.
at::Tensor checkpointed(const std::function<at::Tensor(const at::Tensor&)>& fn, const at::Tensor& x);

}  // namespace peft
