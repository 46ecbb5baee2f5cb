// The CUDA kernels of the 4-bit layer, as a plain C interface: they are built into
// libpeft_cuda.so, which libpeft opens on demand (like LibTorch's CUDA half), so CPU runs
// never load the CUDA runtime for them. Nothing here includes a LibTorch or CUDA header.
//
// Pointers are device pointers; `stream` is a cudaStream_t. Each call returns nullptr once
// the kernel is queued, or the CUDA runtime's message.
#pragma once

#include <cstdint>

extern "C" {

// What both kernels share: the layout of quant_4bit.h (two codes per byte, the first
// element in the high nibble), the fp32 scale of every block, and the 16 code values.
struct PeftCuda4bitWeight {
  const uint8_t* packed;
  const float* scales;    // [ceil(numel / blocksize)]
  float code[16];
  int64_t numel;
  int log2_blocksize;     // bnb's blocksizes are powers of two, 32..4096
};

// Output / input element types.
enum PeftCudaDtype { kPeftCudaF32 = 0, kPeftCudaBF16 = 1, kPeftCudaF16 = 2 };

// out[e] = round(code[q(e)] * scale(e)) for every element e: the fp32 product rounded
// once to `out_dtype`, bit for bit as quant::dequantize_4bit computes it on the CPU.
const char* peft_cuda_dequantize_4bit(const PeftCuda4bitWeight* w, int out_dtype, void* out, void* stream);

// y[r, o] = sum_i x[r, i] * code[q(o, i)] * scale(o, i) in fp32, for a weight seen as
// [out_features, in_features] with in_features a multiple of 32, and 1..8 rows of x
// (contiguous, `x_dtype`, 16-byte aligned; packed 16-byte aligned). Each group of 8
// codes' partial sum is scaled once (all 8 lie in one block). y is fp32 [rows, out_features].
const char* peft_cuda_gemv_4bit(const PeftCuda4bitWeight* w, int64_t out_features, int64_t in_features,
                                const void* x, int x_dtype, int rows, float* y, void* stream);

using PeftCudaDequantize4bitFn = decltype(&peft_cuda_dequantize_4bit);
using PeftCudaGemv4bitFn = decltype(&peft_cuda_gemv_4bit);
}
