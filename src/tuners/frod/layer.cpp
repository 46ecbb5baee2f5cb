// FrodLayer: HF PEFT 0.21's frod.Linear (forward, get_delta_weight, merge, unmerge).
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <stdexcept>

#include "peft/frod.h"
#include "tuners/delta_merge.h"

namespace peft {

FrodLayer::FrodLayer(AdaptableLayer* host, std::shared_ptr<FrodProjection> projection, double dropout_)
    : LayerAdapter(host), dropout(dropout_), projection_(std::move(projection)) {
  const int64_t in = host->input_dim(), nnz = projection_->indices.size(1);
  lambda_l = at::zeros({in}, at::kFloat);
  s_values = at::zeros({nnz}, at::kFloat);
  register_parameter("frod_lambda_l", &lambda_l, {in});
  register_parameter("frod_lambda_s_values", &s_values, {nnz});
}

std::vector<LayerAdapter::SharedSlot> FrodLayer::shared_slots() {
  if (!projection_->saved) return {};  // regenerated from the base weights instead
  const std::string& role = projection_->role;
  return {{"base_model.frod_V." + role, &projection_->V},
          {"base_model.frod_s_indices." + role, &projection_->indices},
          {"base_model.frod_s_size." + role, &projection_->size}};
}

std::pair<at::Tensor, at::Tensor> FrodLayer::u_and_lambda(const at::Tensor& V, const at::Tensor& w) {
  const auto w64 = w.detach().to(at::kCPU, at::kDouble);
  const auto v64 = V.detach().to(at::kCPU, at::kDouble);
  at::Tensor bi;  // W V^-T: bi V^T = W
  try {
    bi = at::linalg_solve(v64, w64.t()).t();
  } catch (const c10::Error&) {  // a singular V: HF falls back to the pseudo-inverse
    bi = at::matmul(w64, at::linalg_pinv(v64, std::nullopt, 1e-6, false).t());
  }
  const auto lambda = at::linalg_vector_norm(bi, 2, {0});
  const auto u = at::where(lambda > 1e-12, bi / lambda, at::zeros_like(bi));
  return {u.to(at::kFloat), lambda.to(at::kFloat)};
}

at::Tensor FrodLayer::base_weight() const {
  at::Tensor w = merged_ ? weight_before_merge_ : host_->dense_weight();
  if (host_->weight_is_in_out()) w = w.t();
  return w.to(at::kFloat);
}

// HF keeps U as a buffer computed once from V and the weight; V can be replaced after that
// (loading files it), so U follows the V it was computed for.
const at::Tensor& FrodLayer::U() const {
  const auto& p = *projection_;
  if (U_.defined() && U_of_ == p.V.unsafeGetTensorImpl()) {
    if (U_.device() != lambda_l.device()) U_ = U_.to(lambda_l.device());  // the adapter moved
    return U_;
  }
  const int64_t in = host_->input_dim();
  const auto& ix = p.indices;
  if (p.size.numel() != 2 || p.size[0].item<int64_t>() != in || p.size[1].item<int64_t>() != in)
    throw std::runtime_error("FROD: base_model.frod_s_size." + p.role + " is not [" + std::to_string(in) + ", " +
                             std::to_string(in) + "]");
  if (ix.numel() > 0 && (ix.min().item<int64_t>() < 0 || ix.max().item<int64_t>() >= in))
    throw std::runtime_error("FROD: base_model.frod_s_indices." + p.role + " holds a position outside [0, " +
                             std::to_string(in) + ")");
  c10::NoGradGuard g;
  U_ = u_and_lambda(p.V, base_weight()).first.to(lambda_l.device());
  U_of_ = p.V.unsafeGetTensorImpl();
  return U_;
}

void FrodLayer::init_from_weight() {
  c10::NoGradGuard g;
  auto [u, lambda] = u_and_lambda(projection_->V, base_weight());
  U_ = u.to(lambda_l.device());
  U_of_ = projection_->V.unsafeGetTensorImpl();
  lambda_l = lambda.to(lambda_l.device());
}

// z S^T for S's COO values: each value S[i, j] adds z[:, j] S[i, j] to column i (duplicate
// positions add up, as HF's coalesce does).
at::Tensor FrodLayer::sparse_times(const at::Tensor& z) const {
  const auto ix = projection_->indices.to(z.device());
  const auto gathered = z.index_select(-1, ix[1]) * s_values.to(z.device(), z.scalar_type());
  return at::zeros_like(z).index_add(-1, ix[0], gathered);
}

at::Tensor FrodLayer::forward(const at::Tensor& x, const at::Tensor& out) {
  const auto u = U();
  auto h = x.to(at::kFloat);
  if (training && dropout > 0) h = at::dropout(h, dropout, true);
  const auto z = at::matmul(h, projection_->V.to(h.device(), at::kFloat));
  const auto adapted = at::linear(sparse_times(z) + z * lambda_l.to(h.device()), u.to(h.device()));
  // HF replaces the base product with the adapted one: out − h Wᵀ + h W'ᵀ.
  const auto base = at::linear(h, base_weight().to(h.device()));
  return (out.to(at::kFloat) + adapted - base).to(out.scalar_type());
}

at::Tensor FrodLayer::delta_weight() const {
  const auto u = U();
  const int64_t in = host_->input_dim();
  const auto dev = lambda_l.device();
  const auto ix = projection_->indices.to(dev);
  auto S = at::zeros({in, in}, lambda_l.options().dtype(at::kFloat));
  S = S.index_put({ix[0], ix[1]}, s_values.to(at::kFloat), /*accumulate=*/true);
  const auto adapted = at::matmul(at::matmul(u.to(dev), S + at::diag(lambda_l.to(at::kFloat))),
                                  projection_->V.to(dev, at::kFloat).t());
  return adapted - base_weight().to(dev);
}

// HF's merge adds W' − W; its unmerge restores the weight it kept from before the merge.
void FrodLayer::merge() {
  if (merged_) return;
  c10::NoGradGuard g;
  const auto delta = delta_weight();
  weight_before_merge_ = host_->dense_weight().clone();
  add_delta_to_host(*host_, delta, +1);
  merged_ = true;
}

void FrodLayer::unmerge() {
  if (!merged_) return;
  c10::NoGradGuard g;
  host_->assign_weight(weight_before_merge_);
  weight_before_merge_ = at::Tensor();
  merged_ = false;
}

}  // namespace peft
