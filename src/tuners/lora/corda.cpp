#include "tuners/lora/corda.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <stdexcept>

#include "peft/model.h"
#include "tuners/lora/target_probes.h"

namespace peft {

namespace {

// Records the input covariance of its layer's forwards (the layer's output unchanged).
class CovarianceProbe : public LayerAdapter {
 public:
  explicit CovarianceProbe(AdaptableLayer* host) : LayerAdapter(host) {}
  std::string type_name() const override { return "CovarianceProbe"; }
  at::Tensor forward(const at::Tensor& x, const at::Tensor& out) override {
    auto in = x.detach().reshape({-1, x.size(-1)}).to(at::kFloat);
    in = in / in.max().abs();
    if (!at::isfinite(in).all().item<bool>())
      throw std::runtime_error("CorDA: a calibration input of a target layer is not finite");
    const auto c = at::mm(in.t(), in);
    sum = sum.defined() ? sum + c : c;
    ++count;
    return out;
  }
  void merge() override {}
  void unmerge() override {}
  std::vector<at::Tensor*> trainable_slots() override { return {}; }

  at::Tensor sum;
  int64_t count = 0;
};

}  // namespace

std::map<std::string, at::Tensor> corda_covariances(Model& model, const LoraConfig& config,
                                                   const std::function<void()>& run_model) {
  TargetProbes probes(model, config, "CorDA", [](AdaptableLayer* h, const std::string&) { return std::make_shared<CovarianceProbe>(h); });
  {
    c10::NoGradGuard no_grad;
    run_model();
  }
  std::map<std::string, at::Tensor> out;
  for (const auto& p : probes.probes()) {
    const auto& probe = static_cast<const CovarianceProbe&>(*p.adapter);
    if (probe.count == 0) throw std::runtime_error("CorDA: the calibration pass never reached '" + p.path + "'");
    out[p.path] = probe.sum / static_cast<double>(probe.count);
  }
  return out;
}

CordaFactors corda_decompose(const at::Tensor& w_out_in, const at::Tensor& covariance, int64_t r, double scaling,
                             const std::string& method) {
  c10::NoGradGuard no_grad;
  const auto w = w_out_in.to(at::kFloat);
  const auto C = covariance.to(w.device(), at::kFloat);
  const int64_t in = C.size(0);
  if (C.dim() != 2 || in != w.size(1) || C.size(1) != in)
    throw std::invalid_argument("CorDA: a covariance " + c10::str(C.sizes()) + " does not fit a weight " +
                                c10::str(w.sizes()));
  if (r > std::min(w.size(0), in))
    throw std::invalid_argument("CorDA: rank " + std::to_string(r) + " exceeds the weight's " + c10::str(w.sizes()));
  // Damping doubled until C + damp · mean(diag C) · I inverts to within 0.05 (HF's loop).
  const auto eye = at::eye(in, C.options());
  const auto mean_diag = C.diagonal().mean();
  double damp = 0.01;
  at::Tensor fixed, inv;
  for (int tries = 0;; ++tries) {
    fixed = C + eye * mean_diag * damp;
    inv = at::linalg_inv(fixed);
    if (at::dist(at::mm(fixed, inv), eye).item<double>() < 0.05) break;
    if (tries > 60) throw std::runtime_error("CorDA: the input covariance cannot be inverted");
    damp *= 2;
  }
  auto [U, S, Vh] = at::linalg_svd(at::mm(w, fixed), /*full_matrices=*/false);
  auto V = at::mm(Vh, inv).t();
  const int64_t k = S.size(0), start = method == "kpm" ? k - r : 0;
  const auto Sr = S.narrow(0, start, r) / scaling;
  const auto Ur = U.narrow(1, start, r), Vr = V.narrow(1, start, r);
  CordaFactors f;
  f.lora_A = (Vr.t() * Sr.sqrt().view({-1, 1})).contiguous();
  f.lora_B = (Ur * Sr.sqrt()).contiguous();
  f.residual = w - scaling * at::mm(f.lora_B, f.lora_A);
  return f;
}

}  // namespace peft
