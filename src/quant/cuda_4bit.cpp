#include "quant/cuda_4bit.h"

#include "quant/cuda/kernels_4bit.h"
#include "quant/gemv_4bit.h"
#include "util/cuda_backend.h"

#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>

#include <algorithm>
#include <iostream>
#include <stdexcept>

namespace peft::quant {

namespace {

struct Kernels {
  std::string error;
  PeftCudaDequantize4bitFn dequantize = nullptr;
  PeftCudaGemv4bitFn gemv = nullptr;
};

Kernels open_kernels() {
  Kernels k;
  const auto found = open_cuda_side_library("libpeft_cuda.so", {"peft_cuda_dequantize_4bit", "peft_cuda_gemv_4bit"},
                                            k.error);
  if (found.empty()) return k.error = "this build's CUDA 4-bit kernels: " + k.error, k;
  k.dequantize = reinterpret_cast<PeftCudaDequantize4bitFn>(found[0]);
  k.gemv = reinterpret_cast<PeftCudaGemv4bitFn>(found[1]);
  return k;
}

// Opened the first time a 4-bit weight is used on a GPU. Without the kernels those
// products still run (dequantized on the host), only far slower: say so once.
const Kernels& kernels() {
  static const Kernels k = [] {
    Kernels opened = open_kernels();
    if (!opened.error.empty())
      std::cerr << "warning: " << opened.error << "; 4-bit products on the GPU fall back to dequantizing on the host "
                << "(slow)\n";
    return opened;
  }();
  return k;
}

int dtype_code(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return kPeftCudaF32;
    case at::kBFloat16: return kPeftCudaBF16;
    case at::kHalf: return kPeftCudaF16;
    default: return -1;
  }
}

void* current_stream(const at::Device& device) {
  return c10::impl::getDeviceGuardImpl(c10::DeviceType::CUDA)->getStream(device).native_handle();
}

// The layer was validated when it was made; this guards only against a swapped tensor.
void check_bytes(const at::Tensor& packed, const Weight4bit& w) {
  if (packed.numel() * static_cast<int64_t>(packed.element_size()) != (w.state.numel() + 1) / 2)
    throw std::invalid_argument("4-bit weight on CUDA: packed codes do not match the weight's shape");
}

void check(const char* error, const char* what) {
  if (error) throw std::runtime_error(std::string(what) + " on CUDA: " + error);
}

PeftCuda4bitWeight weight_args(const at::Tensor& packed, const Weight4bit& w, const at::Tensor& scales) {
  PeftCuda4bitWeight a{};
  a.packed = static_cast<const uint8_t*>(packed.const_data_ptr());
  a.scales = scales.const_data_ptr<float>();
  const std::vector<float>& code = code_table(w.state.type);  // state.code, as the layer checked on construction
  std::copy(code.begin(), code.end(), a.code);
  a.numel = w.state.numel();
  a.log2_blocksize = __builtin_ctzll(static_cast<unsigned long long>(w.state.blocksize));
  return a;
}

}  // namespace

const std::string& load_cuda_4bit_kernels() { return kernels().error; }

at::Tensor dequantize_weight_cuda(const at::Tensor& packed, const Weight4bit& w, at::ScalarType dtype) {
  if (const std::string& why = load_cuda_4bit_kernels(); !why.empty()) throw std::runtime_error(why);
  if (dtype_code(dtype) < 0) throw std::invalid_argument("dequantize_4bit on CUDA: fp32, bf16 or fp16 only");
  check_bytes(packed, w);
  const c10::DeviceGuard guard(packed.device());
  const at::Tensor codes = packed.contiguous();
  const at::Tensor scales = w.scales_on(packed.device());
  at::Tensor out = at::empty({w.out_features(), w.in_features()}, packed.options().dtype(dtype));
  const PeftCuda4bitWeight a = weight_args(codes, w, scales);
  check(kernels().dequantize(&a, dtype_code(dtype), out.data_ptr(), current_stream(packed.device())),
        "dequantize_4bit");
  return out;
}

bool gemv_4bit_cuda_applies(const at::Tensor& x2d, const at::Tensor& packed, const Weight4bit& w) {
  const auto aligned = [](const void* p, uintptr_t n) { return reinterpret_cast<uintptr_t>(p) % n == 0; };
  return x2d.is_cuda() && packed.is_cuda() && x2d.device() == packed.device() && x2d.dim() == 2 &&
         x2d.size(0) >= 1 && x2d.size(0) <= kGemvMaxRows && w.in_features() % 32 == 0 &&
         x2d.size(1) == w.in_features() && dtype_code(x2d.scalar_type()) >= 0 && x2d.is_contiguous() &&
         packed.is_contiguous() && aligned(x2d.const_data_ptr(), 16) && aligned(packed.const_data_ptr(), 16) &&
         load_cuda_4bit_kernels().empty();
}

at::Tensor gemv_4bit_cuda(const at::Tensor& x2d, const at::Tensor& packed, const Weight4bit& w) {
  if (!gemv_4bit_cuda_applies(x2d, packed, w))
    throw std::invalid_argument("gemv_4bit on CUDA: input or weight layout not supported");
  check_bytes(packed, w);
  const c10::DeviceGuard guard(packed.device());
  const at::Tensor scales = w.scales_on(packed.device());
  at::Tensor y = at::empty({x2d.size(0), w.out_features()}, x2d.options().dtype(at::kFloat));
  const PeftCuda4bitWeight a = weight_args(packed, w, scales);
  check(kernels().gemv(&a, w.out_features(), w.in_features(), x2d.const_data_ptr(), dtype_code(x2d.scalar_type()),
                       static_cast<int>(x2d.size(0)), y.data_ptr<float>(), current_stream(packed.device())),
        "gemv_4bit");
  return y;
}

}  // namespace peft::quant
