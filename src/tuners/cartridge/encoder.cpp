#include "tuners/cartridge/encoder.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <stdexcept>

namespace peft {

CartridgeEncoder::CartridgeEncoder(int64_t n, int64_t nf, int64_t layers, int64_t heads, int64_t head_dim)
    : PrefixEncoder(NoSlots{}, n, layers, heads, head_dim), num_frozen(nf) {
  const int64_t d = layers * 2 * heads * head_dim;
  frozen = at::zeros({nf, d}, at::kFloat);
  trainable = at::zeros({n - nf, d}, at::kFloat);
  if (nf > 0) register_parameter("frozen_embedding", &frozen, {nf, d});
  register_parameter("trainable_embedding", &trainable, {n - nf, d});
}

at::Tensor CartridgeEncoder::past() { return num_frozen > 0 ? at::cat({frozen, trainable}, 0) : trainable; }

void CartridgeEncoder::load_prefix(const at::Tensor& prefix) {
  const int64_t d = trainable.size(1);
  if (prefix.dim() != 2 || prefix.size(0) != n || prefix.size(1) != d)
    throw std::invalid_argument("CARTRIDGE: a prefix of shape " + c10::str(prefix.sizes()) + " for an adapter of [" +
                                std::to_string(n) + ", " + std::to_string(d) + "]");
  c10::NoGradGuard no_grad;
  const auto p = prefix.to(trainable.device(), at::kFloat);
  if (num_frozen > 0) frozen.copy_(p.narrow(0, 0, num_frozen));
  trainable.copy_(p.narrow(0, num_frozen, n - num_frozen));
}

}  // namespace peft
