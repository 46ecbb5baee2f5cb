// Gradient checkpointing of one transformer block: run it without keeping activations,
// recompute them during backward. Used when ModelInputs::checkpoint_layers is set.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>

#include "peft/model.h"

namespace peft {

// y = fn(x), with fn's activations recomputed in backward (the CPU and accelerator RNG
// states are replayed so dropout masks repeat). Gradients reach x and every parameter fn
// uses. What backward needs is kept in the autograd graph and freed with it.
at::Tensor checkpointed(const std::function<at::Tensor(const at::Tensor&)>& fn, const at::Tensor& x);

// Runs a decoder's n blocks in order, block(i, x, cache) giving block i's output. With
// ModelInputs::checkpoint_layers and no KV cache (training), each block is checkpointed and
// runs without a cache. `block` is kept for backward: it must hold the tensors it uses by
// value (modules by reference or `this` are fine; they outlive the graph).
template <class Block>
at::Tensor run_decoder_blocks(size_t n, at::Tensor h, const ModelInputs& in, const Block& block) {
  const bool checkpoint = in.checkpoint_layers && !in.cache;
  for (size_t i = 0; i < n; ++i)
    h = checkpoint ? checkpointed([block, i](const at::Tensor& x) { return block(i, x, nullptr); }, h)
                   : block(i, h, in.cache);
  return h;
}

}  // namespace peft
