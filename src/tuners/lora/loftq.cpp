#include "tuners/lora/loftq.h"

#include <ATen/ATen.h>

#include "quant/quant_4bit.h"

namespace peft {

LoftqFactors loftq_decompose(const at::Tensor& weight, int64_t rank, int64_t iters) {
  const auto w = weight.to(at::kCPU, at::kFloat).contiguous();
  at::Tensor res = w.clone();
  LoftqFactors out;
  for (int64_t i = 0; i < iters; ++i) {
    const auto q = quant::quantize_4bit(res, quant::QuantType::kNF4, /*blocksize=*/64, /*double_quant=*/false);
    out.dequantized = quant::dequantize_4bit(q.packed, q.state);
    res = w - out.dequantized;
    // HF's _low_rank_decomposition, op for op: products with sqrt(diag(S)) sliced.
    auto [U, S, Vh] = at::linalg_svd(res, /*full_matrices=*/false);
    const auto root = at::sqrt(at::diag(S));
    out.lora_B = at::matmul(U, root.narrow(1, 0, rank)).contiguous();
    out.lora_A = at::matmul(root.narrow(0, 0, rank), Vh).contiguous();
    if (i + 1 < iters) res = w - at::mm(out.lora_B, out.lora_A);
  }
  return out;
}

}  // namespace peft
