// Gradient checkpointing of one transformer block: run it without keeping activations,
// recompute them during backward. Used when ModelInputs::checkpoint_layers is set.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <vector>

#include "peft/model.h"

namespace peft {

// y = fn(x), with fn's activations recomputed in backward (the CPU and accelerator RNG
// states are replayed so dropout masks repeat), unless the thread's CheckpointPolicy
// skips this block: then y = fn(x), plainly. Gradients reach x and every parameter fn
// uses. What backward needs is kept in the autograd graph and freed with it.
at::Tensor checkpointed(const std::function<at::Tensor(const at::Tensor&)>& fn, const at::Tensor& x);

// y = fn(inputs) for a block that reads more than one tensor (a decoder layer reads the
// encoder's output and its masks): gradients reach every input that requires them, each
// once, so nothing fn reads leads backward into the graph outside. inputs[0] is the
// hidden state; undefined inputs are passed to fn as they are.
using CheckpointedFn = std::function<at::Tensor(const std::vector<at::Tensor>&)>;
at::Tensor checkpointed(const CheckpointedFn& fn, const std::vector<at::Tensor>& inputs);

// Which blocks checkpointed() recomputes, and where it keeps their inputs: set for this
// thread by CheckpointPolicyScope (the trainer's, around a micro-batch's forward and
// backward). Outside a scope every block is checkpointed and its input stays on its device.
struct CheckpointPolicy {
  // Blocks 0, every, 2 * every, ... (counted in forward order within the scope) are
  // recomputed; the others keep their activations. 1: all; larger trades memory for time.
  int64_t every = 1;
  // A recomputed block's input waits for backward in host memory (pinned, copied without a
  // host sync) instead of the accelerator's. On CPU tensors it is a plain copy.
  bool offload = false;
};

class CheckpointPolicyScope {
 public:
  explicit CheckpointPolicyScope(CheckpointPolicy policy);  // throws unless policy.every >= 1
  ~CheckpointPolicyScope();
  CheckpointPolicyScope(const CheckpointPolicyScope&) = delete;
  CheckpointPolicyScope& operator=(const CheckpointPolicyScope&) = delete;

 private:
  CheckpointPolicy outer_;
  int64_t outer_blocks_;
};

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

// Runs an encoder's or decoder's n layers in order, layer(i, {h, context...}) giving layer
// i's output. With `checkpoint`, each layer is checkpointed, and the context (an encoder's
// output, masks, position biases) receives its gradients through every layer that read it.
// `layer` is kept for backward, as run_decoder_blocks' block.
template <class Layer>
at::Tensor run_layers(size_t n, bool checkpoint, const at::Tensor& h, const std::vector<at::Tensor>& context,
                      const Layer& layer) {
  std::vector<at::Tensor> inputs{h};
  inputs.insert(inputs.end(), context.begin(), context.end());
  for (size_t i = 0; i < n; ++i)
    inputs[0] = checkpoint ? checkpointed([layer, i](const std::vector<at::Tensor>& v) { return layer(i, v); }, inputs)
                           : layer(i, inputs);
  return inputs[0];
}

}  // namespace peft
