// RoadLayer: HF PEFT 0.21's road.Linear (_prepare_cols, _apply_road, _get_delta_weight,
// merge, unmerge).
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include "peft/road.h"

namespace peft {

RoadLayer::RoadLayer(AdaptableLayer* host, std::string variant_, int64_t group_size_)
    : LayerAdapter(host), variant(std::move(variant_)), group_size(group_size_) {
  const int64_t out = host->output_dim();
  const int64_t size = variant == "road_1" ? out / 2 : variant == "road_2" ? out : 2 * out;
  theta = at::zeros({size}, at::kFloat);
  alpha = at::ones({size}, at::kFloat);
  register_parameter("road_theta", &theta, {size});
  register_parameter("road_alpha", &alpha, {size});
}

std::pair<at::Tensor, at::Tensor> RoadLayer::columns() const {
  const int64_t half = group_size / 2;
  if (variant == "road_1") {  // one (θ, α) per pair: each half-group's values serve both halves
    const auto t = theta.reshape({-1, half}).repeat_interleave(2, 0).flatten();
    const auto a = alpha.reshape({-1, half}).repeat_interleave(2, 0).flatten();
    return {a * t.cos(), a * t.sin()};
  }
  if (variant == "road_2") return {alpha * theta.cos(), alpha * theta.sin()};
  const auto t = theta.reshape({-1, 2, group_size}), a = alpha.reshape({-1, 2, group_size});
  return {a.select(1, 0).flatten() * t.select(1, 0).cos().flatten(),
          a.select(1, 1).flatten() * t.select(1, 1).sin().flatten()};
}

at::Tensor RoadLayer::forward(const at::Tensor&, const at::Tensor& out) {
  const auto dt = out.scalar_type();
  const auto y = out.to(theta.scalar_type());
  auto [first, second] = columns();
  const auto g = y.reshape({-1, 2, group_size / 2});
  const auto rotate_half = at::stack({-g.select(1, 1), g.select(1, 0)}, 1).reshape(y.sizes());
  return (y * first + rotate_half * second).to(dt);
}

at::Tensor RoadLayer::rotation() const {
  auto [first, second] = columns();
  const int64_t size = second.size(0), half = group_size / 2;
  auto R = at::diag(first);
  // HF builds the off-diagonal part by swapping the halves of each group and negating the
  // rows of the first half: R[i, i + h] = -s[i + h], R[i + h, i] = s[i].
  const auto swapped = second.reshape({-1, 2, half}).flip(1).flatten();
  auto off = at::diag(swapped).reshape({-1, 2, half, size}).flip(1).clone();
  off.select(1, 0).mul_(-1);
  return R + off.reshape({size, size});
}

void RoadLayer::apply_to_host(const at::Tensor& R) {
  c10::NoGradGuard g;
  const at::Tensor w = host_->dense_weight();
  host_->assign_weight(at::matmul(R.to(w.device(), w.scalar_type()), w));
  if (at::Tensor* b = host_->bias_tensor(); b && b->defined())
    b->copy_(at::matmul(R.to(b->device(), b->scalar_type()), *b));
}

void RoadLayer::merge() {
  if (merged_) return;
  apply_to_host(rotation());
  merged_ = true;
}

void RoadLayer::unmerge() {
  if (!merged_) return;
  apply_to_host(at::linalg_inv(rotation().to(at::kFloat)));
  merged_ = false;
}

}  // namespace peft
