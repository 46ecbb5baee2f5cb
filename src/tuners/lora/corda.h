// CorDA (Yang et al. 2024, HF PEFT's init_lora_weights "corda"): context-oriented
// decomposition. A calibration pass collects each target's input covariance C; the
// adapter starts from the SVD of W C: B = U √S, A = (√S) Vᴴ C⁻¹ (S divided by the LoRA
// scaling), over the largest r components ("ipm", instruction-previewed: adapt what the
// data uses) or the smallest ("kpm", knowledge-preserved: keep what it uses frozen), and
// the layer keeps W - scaling · B A.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <map>
#include <string>

#include "peft/lora.h"

namespace peft {

// HF's calib_cov_distribution: probes on `config`'s Linear targets of `model` (no adapter
// needed) while `run_model` runs forwards of one example each; per forward the inputs X
// [tokens, in] become X / max(X) and add Xᵀ X; the sums are divided by the forwards' count.
std::map<std::string, at::Tensor> corda_covariances(Model& model, const LoraConfig& config,
                                                   const std::function<void()>& run_model);

struct CordaFactors {
  at::Tensor lora_A, lora_B, residual;  // [r, in], [out, r], [out, in]
};
// HF's collect_eigens_for_layer, crop_corda_eigens and corda_init for one weight [out, in].
CordaFactors corda_decompose(const at::Tensor& w_out_in, const at::Tensor& covariance, int64_t r, double scaling,
                             const std::string& method);

}  // namespace peft
