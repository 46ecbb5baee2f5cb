#include "models/few_row_linear.h"

#include <ATen/ATen.h>
#include <ATen/ThreadLocalState.h>

#include "models/few_row_bf16.h"
#include "util/autocast.h"
#include "util/parallel_for.h"

namespace peft {
namespace {

// Output features per unit of work: a multiple of MKL's blocking, so that a run computes
// its elements as the whole product does.
constexpr int64_t kUnit = 64;

// No gradient wanted, no autocast, not already inside a parallel region.
bool plain_inference(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  return plain_cpu_inference(x, w, b) && !at::in_parallel_region();
}

// bf16 x, W [out, in] and bias, contiguous, on an AVX512-BF16 CPU: few_row_linear_bf16.
bool bf16_applies(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, int64_t in, int64_t out,
                  bool weight_in_out) {
  if (weight_in_out || !x.defined() || x.dim() < 1 || x.size(-1) != in || !few_row_bf16_supported()) return false;
  if (!x.device().is_cpu() || !w.device().is_cpu() || x.scalar_type() != at::kBFloat16 ||
      w.scalar_type() != at::kBFloat16 || !w.is_contiguous() ||
      (b.defined() && (b.scalar_type() != at::kBFloat16 || !b.device().is_cpu())))
    return false;
  const int64_t rows = in > 0 ? x.numel() / in : 0;
  return rows >= 1 && rows <= kFewRowsBf16 && out >= 1 && plain_inference(x, w, b);
}

bool applies(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, int64_t in, int64_t out) {
  if (!x.defined() || x.dim() < 1 || x.size(-1) != in) return false;
  if (!x.device().is_cpu() || !w.device().is_cpu() || x.scalar_type() != at::kFloat ||
      w.scalar_type() != at::kFloat || (b.defined() && (b.scalar_type() != at::kFloat || !b.device().is_cpu())))
    return false;
  if (!plain_inference(x, w, b) || at::get_num_threads() < 2) return false;
  const int64_t rows = in > 0 ? x.numel() / in : 0;
  return rows >= 1 && rows <= kFewRows && out >= 2 * kUnit && in * out >= (int64_t{1} << 18);
}

}  // namespace

at::Tensor few_row_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, bool weight_in_out) {
  if (!weight.defined() || weight.dim() != 2) return {};
  const int64_t in = weight.size(weight_in_out ? 0 : 1), out = weight.size(weight_in_out ? 1 : 0);
  if (bf16_applies(x, weight, bias, in, out, weight_in_out)) {
    auto sizes = x.sizes().vec();
    sizes.back() = out;
    return few_row_linear_bf16(x.reshape({-1, in}).contiguous(), weight, bias.defined() ? bias.contiguous() : bias)
        .view(sizes);
  }
  if (!applies(x, weight, bias, in, out)) return {};
  const at::Tensor x2d = x.reshape({-1, in});
  at::Tensor y = at::empty({x2d.size(0), out}, x2d.options());
  // The workers run operators: they take the caller's grad and inference modes (thread-local).
  const at::ThreadLocalState caller;
  at::parallel_for(0, (out + kUnit - 1) / kUnit, 1, [&](int64_t u0, int64_t u1) {
    const at::ThreadLocalStateGuard guard(caller);
    const int64_t o0 = u0 * kUnit, n = std::min(out, u1 * kUnit) - o0;
    const at::Tensor b = bias.defined() ? bias.narrow(0, o0, n) : bias;
    // The calls the whole product makes (at::linear, Conv1D's addmm), on a run of features.
    const at::Tensor part = weight_in_out ? (b.defined() ? at::addmm(b, x2d, weight.narrow(1, o0, n))
                                                         : at::mm(x2d, weight.narrow(1, o0, n)))
                                          : at::linear(x2d, weight.narrow(0, o0, n), b);
    y.narrow(1, o0, n).copy_(part);
  });
  auto sizes = x.sizes().vec();
  sizes.back() = out;
  return y.view(sizes);
}

}  // namespace peft
