// The 4-bit layer on a CUDA device, through the kernels of libpeft_cuda.so (quant/cuda/),
// which is opened on first use. Without them (a build without nvcc), a CUDA weight is
// dequantized on the host and copied over: correct, and slow.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>

#include "quant/linear_4bit.h"

namespace peft::quant {

// Loads LibTorch's CUDA half and libpeft_cuda.so (once). Returns "" on success, else why
// not.
const std::string& load_cuda_4bit_kernels();

// The whole weight [out, in] in `dtype` (fp32, bf16 or fp16) on packed's CUDA device, bit
// for bit the values dequantize_4bit gives on the host.
at::Tensor dequantize_weight_cuda(const at::Tensor& packed, const Weight4bit& w, at::ScalarType dtype);

// True where gemv_4bit_cuda can compute x [rows, in] against `w`: both on one CUDA
// device, 1..kGemvMaxRows contiguous rows of fp32 / bf16 / fp16, in_features a multiple
// of 32, and the kernels loaded.
bool gemv_4bit_cuda_applies(const at::Tensor& x2d, const at::Tensor& packed, const Weight4bit& w);

// [rows, out] fp32, as gemv_4bit computes it on the host: the codes streamed once, never a
// dequantized weight written.
at::Tensor gemv_4bit_cuda(const at::Tensor& x2d, const at::Tensor& packed, const Weight4bit& w);

}  // namespace peft::quant
