// AdaLoraLinear: HF PEFT's SVDLinear forward, merge, unmerge, and its share of the
// orthogonal regularizer AdaLoraModel.forward adds to the loss.
#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <c10/core/GradMode.h>

#include "peft/adalora.h"
#include "peft/layers.h"
#include "tuners/delta_merge.h"

namespace peft {

AdaLoraLinear::AdaLoraLinear(AdaptableLayer* host, int64_t r, double scaling_, double ranknum_, double dropout_,
                             double orth_reg_weight_)
    : LayerAdapter(host), scaling(scaling_), ranknum(ranknum_), dropout(dropout_), orth_reg_weight(orth_reg_weight_) {
  const int64_t in = host->input_dim(), out = host->output_dim();
  lora_A = at::zeros({r, in}, at::kFloat);
  lora_E = at::zeros({r, 1}, at::kFloat);
  lora_B = at::zeros({out, r}, at::kFloat);
  register_parameter("lora_A", &lora_A, {r, in});
  register_parameter("lora_B", &lora_B, {out, r});
  register_parameter("lora_E", &lora_E, {r, 1});
}

namespace {
// HF divides by the float32 tensor ranknum + 1e-5.
double ranknum_divisor(double ranknum) { return static_cast<float>(static_cast<float>(ranknum) + 1e-5f); }
}  // namespace

at::Tensor AdaLoraLinear::forward(const at::Tensor& x, const at::Tensor& out) {
  // Under autocast the products run in bf16 whatever x is (as LoRA's forward).
  auto xa = at::autocast::is_autocast_enabled(x.device().type()) ? x : x.to(lora_A.scalar_type());
  if (training && dropout > 0) xa = at::dropout(xa, dropout, true);
  auto delta = at::linear(at::linear(xa, lora_A * lora_E), lora_B) * scaling / ranknum_divisor(ranknum);
  return out + delta.to(out.scalar_type());
}

at::Tensor AdaLoraLinear::delta_weight() const {
  return at::matmul(lora_B.to(at::kFloat), lora_A.to(at::kFloat) * lora_E.to(at::kFloat)) * scaling /
         ranknum_divisor(ranknum);
}

at::Tensor AdaLoraLinear::aux_loss() const {
  if (!training || orth_reg_weight == 0) return {};
  auto deviation = [](const at::Tensor& cov) {
    return at::linalg_matrix_norm(cov - at::eye(cov.size(0), cov.options()), "fro");
  };
  return orth_reg_weight * (deviation(at::matmul(lora_A, lora_A.t())) + deviation(at::matmul(lora_B.t(), lora_B))) / 2;
}

void AdaLoraLinear::merge() {
  if (merged_) return;
  add_delta_to_host(*host_, delta_weight(), +1);
  merged_ = true;
}

void AdaLoraLinear::unmerge() {
  if (!merged_) return;
  add_delta_to_host(*host_, delta_weight(), -1);
  merged_ = false;
}

}  // namespace peft
