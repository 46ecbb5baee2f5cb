// LilyLayer: HF PEFT 0.21's lily.Linear forward.
#include <ATen/ATen.h>

#include <stdexcept>

#include "peft/lily.h"

namespace peft {

LilyLayer::LilyLayer(AdaptableLayer* host, int64_t r_, int64_t num_B_, double scaling_,
                     LilyConfig::SharedFactors factors)
    : LayerAdapter(host), r(r_), num_B(num_B_), scaling(scaling_), factors_(std::move(factors)) {
  const int64_t in = host->input_dim(), out = host->output_dim();
  router = at::zeros({num_B, r}, at::kFloat);
  register_parameter("lily_A.weight", factors_.A.get(), {r, in});
  register_parameter("lily_B.weight", factors_.B.get(), {num_B * r, out});
  register_parameter("lily_router.weight", &router, {num_B, r});
}

// The router's probabilities averaged over every token of the batch (padding included, as
// HF's mean over the flattened rows) mix the experts into one [r, out] B.
at::Tensor LilyLayer::forward(const at::Tensor& x, const at::Tensor& out) {
  const auto& A = *factors_.A;
  const auto& B = *factors_.B;
  const auto hidden = at::linear(x.to(A.scalar_type()), A);
  const auto p = at::softmax(at::linear(hidden, router), -1).reshape({-1, num_B}).mean(0);
  const auto mixed = at::tensordot(p, B.reshape({num_B, r, B.size(1)}), {0}, {0});
  return out + (at::matmul(hidden, mixed) * scaling).to(out.scalar_type());
}

void LilyLayer::merge() {
  throw std::logic_error("LILY adapters cannot be merged: the expert mix depends on the batch (as in HF PEFT)");
}

}  // namespace peft
