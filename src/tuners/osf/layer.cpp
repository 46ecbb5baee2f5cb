// OsfLayer: HF PEFT 0.21's OSF Linear (decompose_weight_matrix, the gradient hooks,
// get_delta_weight, merge, the factored forward).
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <algorithm>

#include "peft/osf.h"
#include "tuners/delta_merge.h"

namespace peft {

OsfLayer::OsfLayer(AdaptableLayer* host, int64_t k_) : LayerAdapter(host), k(k_) {
  c10::NoGradGuard no_grad;
  at::Tensor w = host->dense_weight().to(at::kFloat);
  if (host->weight_is_in_out()) w = w.t();
  const int64_t out = w.size(0), in = w.size(1);
  // torch.linalg.svd(W, full_matrices=False): the same LAPACK call as HF's, so the same signs.
  auto [U, S, Vh] = at::linalg_svd(w, /*full_matrices=*/false);
  k = std::min(k, S.size(0));
  U_low0 = U.slice(1, k).contiguous();
  S_low0 = S.slice(0, k).contiguous();
  V_low0 = Vh.slice(0, k).contiguous();
  // HF keeps a high factor only where the low one cannot stand for its complement: U is
  // square when out <= in, V when out >= in (then I − U_high U_highᵀ = U_low⁰ U_low⁰ᵀ).
  if (out > in) U_high = U.slice(1, 0, k).contiguous();
  if (out < in) V_high = Vh.slice(0, 0, k).contiguous();
  U_low = U_low0.clone();
  S_low = S_low0.clone();
  V_low = V_low0.clone();
  const int64_t low = S_low0.size(0);
  register_parameter("osf_svd_params.U_low", &U_low, {out, low});
  register_parameter("osf_svd_params.S_low", &S_low, {low});
  register_parameter("osf_svd_params.V_low", &V_low, {low, in});
}

// U.detach() + (P(U) − P(U).detach()) is U itself (the difference is exactly zero), and
// its gradient is Pᵀ g = P g (P is a symmetric projection): HF's hook on U_low's gradient.
at::Tensor OsfLayer::projected_u() const {
  if (!U_low.requires_grad() || !at::GradMode::is_enabled()) return U_low;
  at::Tensor p;
  if (U_high.defined()) {
    const auto uh = U_high.to(U_low.device());
    p = U_low - at::mm(uh, at::mm(uh.t(), U_low));
  } else {
    const auto u0 = U_low0.to(U_low.device());
    p = at::mm(u0, at::mm(u0.t(), U_low));
  }
  return U_low.detach() + (p - p.detach());
}

at::Tensor OsfLayer::projected_v() const {
  if (!V_low.requires_grad() || !at::GradMode::is_enabled()) return V_low;
  at::Tensor p;
  if (V_high.defined()) {
    const auto vh = V_high.to(V_low.device());
    p = V_low - at::mm(at::mm(V_low, vh.t()), vh);
  } else {
    const auto v0 = V_low0.to(V_low.device());
    p = at::mm(at::mm(V_low, v0.t()), v0);
  }
  return V_low.detach() + (p - p.detach());
}

at::Tensor OsfLayer::delta_weight() const {
  const auto dev = U_low.device();
  const auto current = at::mm(U_low * S_low.unsqueeze(0), V_low);
  const auto initial = at::mm(U_low0.to(dev) * S_low0.to(dev).unsqueeze(0), V_low0.to(dev));
  return current - initial;
}

// HF's factored forward: delta = A B with A = [U_low S_low, −U_low⁰ S_low⁰] [out, 2r] and
// B = [V_low; V_low⁰] [2r, in], so x deltaᵀ = (x Bᵀ) Aᵀ without the [out, in] delta.
at::Tensor OsfLayer::forward(const at::Tensor& x, const at::Tensor& out) {
  const auto dev = U_low.device();
  const auto a = at::cat({projected_u() * S_low.unsqueeze(0), -(U_low0.to(dev) * S_low0.to(dev).unsqueeze(0))}, 1);
  const auto b = at::cat({projected_v(), V_low0.to(dev)}, 0);
  const auto h = at::linear(at::linear(x.to(a.scalar_type()), b), a);
  return out + h.to(out.scalar_type());
}

void OsfLayer::merge() {
  if (merged_) return;
  add_delta_to_host(*host_, delta_weight(), +1);
  merged_ = true;
}

// HF cannot unmerge OSF (it warns, or raises at the model level); the frozen SVD factors
// are kept here, so taking the same delta back out is exact up to rounding.
void OsfLayer::unmerge() {
  if (!merged_) return;
  add_delta_to_host(*host_, delta_weight(), -1);
  merged_ = false;
}

}  // namespace peft
