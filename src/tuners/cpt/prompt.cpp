#include "tuners/cpt/prompt.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

namespace peft {

namespace {
int64_t mod4(int64_t t) { return ((t % 4) + 4) % 4; }  // torch.remainder's sign
}  // namespace

CptPrompt::CptPrompt(int64_t n_, int64_t dim_, std::vector<int64_t> types_, double eps_format_, double eps_input_)
    : SoftPrompt(n_, dim_, "embedding.weight"), types(std::move(types_)), eps_format(eps_format_),
      eps_input(eps_input_) {
  delta = at::zeros({n, dim}, at::kFloat);
  register_parameter("delta_embedding.weight", &delta, {n, dim});
}

at::Tensor CptPrompt::epsilon() const {
  // float32 throughout, as HF: sqrt of a float32 tensor, times the Python float.
  const auto scale = at::sqrt(at::full({1}, static_cast<double>(dim) / 2048.0, at::TensorOptions(at::kFloat)));
  const float format = (scale * eps_format).item<float>(), input = (scale * eps_input).item<float>();
  std::vector<float> eps(types.size(), 1e-10f);  // HF's MIN_VALUE
  for (size_t i = 0; i < types.size(); ++i) {
    if (types[i] <= 0) continue;
    const int64_t m = mod4(types[i]);
    if (m == 1 || m == 3) eps[i] = format;
    else if (m == 2) eps[i] = input;
  }
  return at::tensor(eps, at::kFloat);
}

at::Tensor CptPrompt::projected_delta() const {
  c10::NoGradGuard no_grad;
  const at::Tensor w = delta.detach();
  const auto norm = at::linalg_vector_norm(w, 2, at::IntArrayRef{1});
  const auto eps = epsilon().to(w.device());
  // Rows of norm 0 stay as they are (HF's projection_mask).
  const auto factor = eps / at::clamp_min(norm, eps);
  return at::where((norm > 0).unsqueeze(1), w * factor.unsqueeze(1), w);
}

at::Tensor CptPrompt::gradient_mask() const {
  std::vector<uint8_t> keep(types.size());
  for (size_t i = 0; i < types.size(); ++i) keep[i] = mod4(types[i]) != 0;  // HF: remainder in {1, 2, 3}
  return at::tensor(keep, at::kByte).to(at::kBool).view({-1, 1});
}

at::Tensor CptPrompt::prompts() {
  {
    c10::NoGradGuard no_grad;
    delta.copy_(projected_delta());
  }
  // The delta's value everywhere; its gradient only where the mask keeps it.
  const auto mask = gradient_mask().to(delta.device());
  return embedding + at::where(mask, delta, delta.detach());
}

}  // namespace peft
