// PsoftLayer: HF PEFT 0.21's psoft.Linear (the SVD init of A and B, OrthLayer's R, the
// forward, get_delta_weight, merge, unmerge).
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/GradMode.h>

#include <cmath>

#include "peft/psoft.h"
#include "tuners/delta_merge.h"
#include "tuners/lora/svd_lowrank.h"

namespace peft {

namespace {

// The top r singular triplets of w [out, in]: U_r [out, r], S_r [r], Vh_r [r, in]. The same
// LAPACK calls as HF's (and, for lowrank, the same seeded sketch), so the same signs.
std::tuple<at::Tensor, at::Tensor, at::Tensor> top_svd(const at::Tensor& w, const PsoftConfig& c) {
  if (c.psoft_svd == "lowrank") {
    auto gen = at::detail::createCPUGenerator(c.random_seed);
    auto [U, S, V] = svd_lowrank(w, c.r, c.psoft_svd_lowrank_niter, gen);
    return {U.narrow(1, 0, c.r), S.narrow(0, 0, c.r), V.narrow(1, 0, c.r).t()};
  }
  auto [U, S, Vh] = at::linalg_svd(w, /*full_matrices=*/false);
  return {U.narrow(1, 0, c.r), S.narrow(0, 0, c.r), Vh.narrow(0, 0, c.r)};
}

}  // namespace

PsoftLayer::PsoftLayer(AdaptableLayer* host, const PsoftConfig& c)
    : LayerAdapter(host),
      scaling(c.psoft_alpha / static_cast<double>(c.r)),
      dropout(c.psoft_dropout),
      r_(c.r),
      orth_(c.psoft_orth),
      neumann_(c.use_cayley_neumann),
      neumann_terms_(c.num_cayley_neumann_terms),
      neumann_eps_(c.cayley_neumann_eps) {
  c10::NoGradGuard g;
  at::Tensor w = host->dense_weight().detach().to(at::kCPU, at::kFloat);
  if (host->weight_is_in_out()) w = w.t();
  auto [Ur, Sr, Vhr] = top_svd(w.contiguous(), c);
  const auto s = Sr / scaling;
  if (c.ab_svd_init == "pissa_init") {
    const auto root = at::sqrt(s);
    A = (root.unsqueeze(1) * Vhr).contiguous();
    B = (Ur * root.unsqueeze(0)).contiguous();
  } else {  // psoft_init: A row-orthogonal
    A = Vhr.contiguous();
    B = (Ur * s.unsqueeze(0)).contiguous();
  }
  const auto dev = host->weight_tensor()->device();
  A = A.to(dev);
  B = B.to(dev);
  const auto f32 = at::TensorOptions(at::kFloat).device(dev);
  if (orth_) {
    weight = at::zeros({r_ * (r_ - 1) / 2}, f32);
    register_parameter("psoft_R.weight", &weight, {r_ * (r_ - 1) / 2});
  } else {
    weight = at::eye(r_, f32);
    register_parameter("psoft_R.weight", &weight, {r_, r_});
  }
  if (c.psoft_mag_b) {
    vector_b = at::ones({r_}, f32);
    register_parameter("psoft_R.vector_b", &vector_b, {r_});
  }
  if (c.psoft_mag_a) {
    vector_a = at::ones({r_}, f32);
    register_parameter("psoft_R.vector_a", &vector_a, {r_});
  }
}

std::vector<at::Tensor*> PsoftLayer::trainable_slots() {
  std::vector<at::Tensor*> slots = {&weight};
  if (vector_b.defined()) slots.push_back(&vector_b);
  if (vector_a.defined()) slots.push_back(&vector_a);
  return slots;
}

// HF's OrthLayer.get_matrix: Q from the upper triangle (row-major, torch.triu_indices), then
// (I + Q)(I − Q)⁻¹ or I + 2Q + 2Q² + … + 2Qᵗ⁻² + Qᵗ⁻¹, then the scale vectors.
at::Tensor PsoftLayer::R() const {
  at::Tensor R;
  if (!orth_) {
    R = weight;
  } else {
    const auto opts = weight.options();
    const auto ix = at::triu_indices(r_, r_, 1, opts.dtype(at::kLong));
    auto Q = at::zeros({r_, r_}, opts).index_put({ix[0], ix[1]}, weight);
    Q = Q - Q.t();
    const auto eye = at::eye(r_, opts);
    if (neumann_) {
      if (neumann_eps_) {
        const auto norm = at::linalg_matrix_norm(Q.detach(), "fro").item<double>();
        if (std::isfinite(norm) && norm > *neumann_eps_) Q = Q * (*neumann_eps_ / (norm + 1e-12));
      }
      R = eye;
      const int64_t t = neumann_terms_;
      if (t > 1) R = R + 2 * Q;
      if (t > 2) {
        auto power = at::mm(Q, Q);
        R = R + 2 * power;
        for (int64_t i = 3; i < t - 1; ++i) {
          power = at::mm(power, Q);
          R = R + 2 * power;
        }
        R = R + at::mm(power, Q);
      }
    } else {
      R = at::linalg_solve(eye - Q, eye + Q, /*left=*/false);
    }
  }
  if (vector_b.defined()) R = vector_b.unsqueeze(1) * R;
  if (vector_a.defined()) R = R * vector_a.unsqueeze(0);
  return R;
}

at::Tensor PsoftLayer::forward(const at::Tensor& x, const at::Tensor& out) {
  const auto dev = weight.device();
  auto h = x;
  if (training && dropout > 0) h = at::dropout(h, dropout, true);
  const auto dtype = h.scalar_type();
  const auto xa = at::linear(h, A.to(dev, dtype));
  // HF computes R's product in fp32 for half inputs on the CPU.
  const bool widen = dev.is_cpu() && (dtype == at::kBFloat16 || dtype == at::kHalf);
  const auto xr = widen ? at::linear(xa.to(at::kFloat), R()).to(dtype) : at::linear(xa, R().to(dtype));
  const auto delta = at::linear(xr - xa, B.to(dev, dtype)) * scaling;
  return out + delta.to(out.scalar_type());
}

at::Tensor PsoftLayer::delta_weight() const {
  const auto dev = weight.device();
  const auto Rm = R().to(at::kFloat);
  const auto eye = at::eye(r_, Rm.options());
  return at::mm(at::mm(B.to(dev, at::kFloat), Rm - eye), A.to(dev, at::kFloat)) * scaling;
}

void PsoftLayer::merge() {
  if (merged_) return;
  add_delta_to_host(*host_, delta_weight(), +1);
  merged_ = true;
}

void PsoftLayer::unmerge() {
  if (!merged_) return;
  add_delta_to_host(*host_, delta_weight(), -1);
  merged_ = false;
}

}  // namespace peft
