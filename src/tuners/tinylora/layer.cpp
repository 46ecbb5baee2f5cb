// TinyLoraLayer: HF PEFT 0.21's tinylora.Linear and tinylora.Embedding (_init_svd,
// _init_projection, _compute_R, forward, get_delta_weight, merge, unmerge).
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <cmath>

#include "peft/tinylora.h"

namespace peft {

TinyLoraLayer::TinyLoraLayer(AdaptableLayer* host, const TinyLoraConfig& c, std::shared_ptr<TinyLoraVector> vector,
                             uint64_t seed, std::string file_prefix)
    : LayerAdapter(host),
      dropout(c.tinylora_dropout),
      embedding(host->kind() == LayerKind::kEmbedding),
      save_projection(c.save_projection),
      vector_(std::move(vector)),
      file_prefix_(std::move(file_prefix)) {
  c10::NoGradGuard g;
  // The matrix HF decomposes: a Linear's weight [out, in], Conv1D's transposed, an
  // Embedding's table [vocab, dim] as stored.
  const at::Tensor dense = host->dense_weight().detach();
  at::Tensor w = dense.to(at::kCPU, at::kFloat);
  if (!embedding && host->weight_is_in_out()) w = w.t();
  auto [U, S, Vh] = at::linalg_svd(w.contiguous(), /*full_matrices=*/false);
  r = std::min<int64_t>(c.r, std::min(w.size(0), w.size(1)));
  // HF casts the truncated factors to the weight's dtype before the square root.
  const auto dtype = dense.is_floating_point() ? dense.scalar_type() : at::kFloat;
  const auto Ur = U.narrow(1, 0, r).to(dtype), Sr = S.narrow(0, 0, r).to(dtype), Vr = Vh.narrow(0, 0, r).to(dtype);
  const auto root = at::sqrt(Sr);
  const auto device = host->weight_tensor()->device();
  A = (root.unsqueeze(1) * Vr).contiguous().to(device);
  B = (Ur * root.unsqueeze(0)).contiguous().to(device);
  // torch.normal(0, 1/√r, (u, r, r), generator=torch.Generator().manual_seed(seed)).
  auto gen = at::detail::createCPUGenerator(seed);
  P = at::normal(0.0, 1.0 / std::sqrt(static_cast<double>(r)), {c.u, r, r}, gen, at::TensorOptions(at::kFloat))
          .to(device);
  // Every layer of a group registers the one v: the model's parameters list it once; it is
  // filed once, under its shared key (shared_slots).
  register_parameter("tinylora_v", &vector_->v, {c.u});
}

// A and B are HF's persistent buffers, P one where save_projection is set: filed under the
// layer's path ("<prefix><path>.tinylora_A"), outside the trained slots.
std::vector<LayerAdapter::SharedSlot> TinyLoraLayer::shared_slots() {
  std::vector<SharedSlot> out = {{vector_->key, &vector_->v},
                                 {file_prefix_ + "tinylora_A", &A},
                                 {file_prefix_ + "tinylora_B", &B}};
  if (save_projection) out.push_back({file_prefix_ + "tinylora_P", &P});
  return out;
}

at::Tensor TinyLoraLayer::R() const {
  const auto& v = vector_->v;
  return at::einsum("i,ijk->jk", {v, P.to(v.device(), v.scalar_type())});
}

at::Tensor TinyLoraLayer::forward(const at::Tensor& x, const at::Tensor& out) {
  const auto dev = out.device();
  if (embedding) {
    // B[x] R A in the output's dtype; dropout after the lookup.
    const auto dtype = out.scalar_type();
    auto h = at::embedding(B.to(dev, dtype), x);
    if (training && dropout > 0) h = at::dropout(h, dropout, true);
    h = at::matmul(h, R().to(dev, dtype));
    return out + at::matmul(h, A.to(dev, dtype));
  }
  // HF computes on x cast to A's dtype: ((x Aᵀ) Rᵀ) Bᵀ, then casts the sum back.
  const auto dtype = A.scalar_type();
  auto h = x.to(dtype);
  if (training && dropout > 0) h = at::dropout(h, dropout, true);
  h = at::linear(h, A.to(dev));
  h = at::linear(h, R().to(dev, h.scalar_type()));
  const auto delta = at::linear(h, B.to(dev, h.scalar_type()));
  return (out + delta).to(out.scalar_type());
}

at::Tensor TinyLoraLayer::delta_weight() const {
  const auto dev = A.device();
  auto d = at::mm(at::mm(B.to(dev, at::kFloat), R().to(dev, at::kFloat)), A.to(at::kFloat));
  // Conv1D stores [in, out]; an Embedding's table is already B R A's layout.
  if (!embedding && host_->weight_is_in_out()) d = d.t();
  return d;
}

namespace {

// host.weight += sign * delta, delta in the stored weight's layout.
void add_stored_delta(AdaptableLayer& host, const at::Tensor& delta, int sign) {
  c10::NoGradGuard g;
  const at::Tensor w = host.dense_weight();
  const auto d = delta.to(w.device(), w.scalar_type());
  host.assign_weight(sign > 0 ? w + d : w - d);
}

}  // namespace

void TinyLoraLayer::merge() {
  if (merged_) return;
  add_stored_delta(*host_, delta_weight(), +1);
  merged_ = true;
}

void TinyLoraLayer::unmerge() {
  if (!merged_) return;
  add_stored_delta(*host_, delta_weight(), -1);
  merged_ = false;
}

}  // namespace peft
