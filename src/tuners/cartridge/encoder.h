// CARTRIDGE's input adapter: a prefix held as two slots, the frozen rows and the trained.
#pragma once

#include <ATen/core/Tensor.h>

#include "tuners/prefix_tuning/layer.h"

namespace peft {

class CartridgeEncoder : public PrefixEncoder {
 public:
  CartridgeEncoder(int64_t n, int64_t frozen, int64_t layers, int64_t heads, int64_t head_dim);
  std::string type_name() const override { return "CartridgeEncoder"; }
  at::Tensor past() override;  // the frozen rows, then the trained
  std::vector<at::Tensor*> trainable_slots() override { return {&trainable}; }
  // HF's load_prompt_embeddings: a whole prefix [n, layers * 2 * kv_dim] split into the slots.
  void load_prefix(const at::Tensor& prefix);

  at::Tensor frozen, trainable;  // HF's frozen_embedding [frozen, d], trainable_embedding [n - frozen, d]
  int64_t num_frozen;
};

}  // namespace peft
