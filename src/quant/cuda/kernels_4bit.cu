// CUDA kernels of the 4-bit layer (interface and layout: kernels_4bit.h).
#include "quant/cuda/kernels_4bit.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

namespace {

constexpr int kThreads = 256;

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
template <>
__device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }

__device__ __forceinline__ void load_code(const PeftCuda4bitWeight& w, float* lut) {
  if (threadIdx.x < 16) lut[threadIdx.x] = w.code[threadIdx.x];
  __syncthreads();
}

// Any size: one byte (two elements) per thread and step. __fmul_rn keeps the product a plain fp32
// multiply, rounded once more by from_float, as the CPU path rounds it.
template <typename T>
__global__ void dequantize_kernel(const __grid_constant__ PeftCuda4bitWeight w, T* __restrict__ out) {
  __shared__ float lut[16];
  load_code(w, lut);
  const int64_t bytes = (w.numel + 1) / 2;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t b = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; b < bytes; b += stride) {
    const unsigned q = w.packed[b];
    const int64_t e = 2 * b;
    out[e] = from_float<T>(__fmul_rn(lut[q >> 4], w.scales[e >> w.log2_blocksize]));
    if (e + 1 < w.numel) out[e + 1] = from_float<T>(__fmul_rn(lut[q & 15], w.scales[(e + 1) >> w.log2_blocksize]));
  }
}

// Eight outputs of one row as a single 16-byte (bf16 / fp16) or two 16-byte (fp32) stores.
__device__ __forceinline__ void store8(float* p, const float* v) {
  reinterpret_cast<float4*>(p)[0] = make_float4(v[0], v[1], v[2], v[3]);
  reinterpret_cast<float4*>(p)[1] = make_float4(v[4], v[5], v[6], v[7]);
}
__device__ __forceinline__ void store8(__nv_bfloat16* p, const float* v) {
  uint4 u;
  __nv_bfloat162* h = reinterpret_cast<__nv_bfloat162*>(&u);
  for (int k = 0; k < 4; ++k) h[k] = __halves2bfloat162(__float2bfloat16_rn(v[2 * k]), __float2bfloat16_rn(v[2 * k + 1]));
  *reinterpret_cast<uint4*>(p) = u;
}
__device__ __forceinline__ void store8(__half* p, const float* v) {
  uint4 u;
  __half2* h = reinterpret_cast<__half2*>(&u);
  for (int k = 0; k < 4; ++k) h[k] = __halves2half2(__float2half_rn(v[2 * k]), __float2half_rn(v[2 * k + 1]));
  *reinterpret_cast<uint4*>(p) = u;
}

// The 8 code values of one 32-bit word of packed codes. Little-endian: byte j of the word
// is the packed byte 4 i + j, its high nibble the earlier element.
__device__ __forceinline__ void decode_word(uint32_t q, const float* lut, float* v) {
  for (int j = 0; j < 4; ++j) {
    const unsigned byte = (q >> (8 * j)) & 0xffu;
    v[2 * j] = lut[byte >> 4];
    v[2 * j + 1] = lut[byte & 15u];
  }
}

// The common case, numel a multiple of 8: one 32-bit word (eight codes, which share a
// scale since 8 divides the blocksize) per thread and step, written with wide stores.
// The products and their rounding are dequantize_kernel's.
template <typename T>
__global__ void dequantize8_kernel(const __grid_constant__ PeftCuda4bitWeight w, T* __restrict__ out) {
  __shared__ float lut[16];
  load_code(w, lut);
  const int64_t words = w.numel / 8;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const uint32_t* packed = reinterpret_cast<const uint32_t*>(w.packed);
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < words; i += stride) {
    const uint32_t q = __ldg(packed + i);
    const float s = __ldg(w.scales + ((8 * i) >> w.log2_blocksize));
    float v[8];
    decode_word(q, lut, v);
    for (int j = 0; j < 8; ++j) v[j] = __fmul_rn(v[j], s);
    store8(out + 8 * i, v);
  }
}

// Eight consecutive x values of one row as fp32 (16-byte loads for bf16 / fp16).
template <typename TX>
__device__ __forceinline__ void load8(const TX* p, float* v);
template <>
__device__ __forceinline__ void load8<float>(const float* p, float* v) {
  const float4 a = __ldg(reinterpret_cast<const float4*>(p)), b = __ldg(reinterpret_cast<const float4*>(p) + 1);
  v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
}
template <>
__device__ __forceinline__ void load8<__nv_bfloat16>(const __nv_bfloat16* p, float* v) {
  const uint4 u = __ldg(reinterpret_cast<const uint4*>(p));
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&u);
  for (int k = 0; k < 4; ++k) {
    const float2 f = __bfloat1622float2(h[k]);
    v[2 * k] = f.x, v[2 * k + 1] = f.y;
  }
}
template <>
__device__ __forceinline__ void load8<__half>(const __half* p, float* v) {
  const uint4 u = __ldg(reinterpret_cast<const uint4*>(p));
  const __half2* h = reinterpret_cast<const __half2*>(&u);
  for (int k = 0; k < 4; ++k) {
    const float2 f = __half22float2(h[k]);
    v[2 * k] = f.x, v[2 * k + 1] = f.y;
  }
}

// One warp per output feature. Step k: lane l reads 32-bit word k = l, l + 32, ... of the
// feature's packed row (codes 8 k .. 8 k + 7, in one block since 8 divides the blocksize)
// and the 8 x values they multiply, so each warp-wide load of codes (128 bytes) and of x
// (512 bytes of bf16 per row) is contiguous. (With 32 codes per lane, every x load touched
// 16 cache lines, and L1 traffic, not memory, bounded the kernel at ~27% of the copy rate.)
// A lane issues the loads of its next kUnroll words and scales before it decodes them. The
// 8 products of a word are summed, scaled once, and added up in fp32.
constexpr int kUnroll = 8;

template <typename TX, int R>
__global__ void __launch_bounds__(kThreads) gemv_kernel(const __grid_constant__ PeftCuda4bitWeight w,
                                                        int64_t out_features, int64_t in_features,
                                                        const TX* __restrict__ x, float* __restrict__ y) {
  __shared__ float lut[16];
  load_code(w, lut);
  const int lane = threadIdx.x & 31;
  const int64_t o = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  if (o >= out_features) return;
  const int64_t words = in_features / 8;
  const uint32_t* row = reinterpret_cast<const uint32_t*>(w.packed) + o * words;
  const int64_t first = o * in_features;
  float acc[R];
  for (int r = 0; r < R; ++r) acc[r] = 0.f;
  for (int64_t k0 = lane; k0 < words; k0 += 32 * kUnroll) {
    uint32_t q[kUnroll];
    float s[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t k = k0 + 32 * u;
      q[u] = k < words ? __ldg(row + k) : 0u;
      s[u] = k < words ? __ldg(w.scales + ((first + 8 * k) >> w.log2_blocksize)) : 0.f;
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t k = k0 + 32 * u;
      if (k >= words) break;
      float wv[8];
      decode_word(q[u], lut, wv);
      for (int r = 0; r < R; ++r) {
        float xv[8];
        load8<TX>(x + r * in_features + 8 * k, xv);
        float dot = 0.f;
        for (int j = 0; j < 8; ++j) dot = fmaf(xv[j], wv[j], dot);
        acc[r] = fmaf(dot, s[u], acc[r]);
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    float v = acc[r];
    for (int d = 16; d > 0; d /= 2) v += __shfl_xor_sync(0xffffffffu, v, d);
    if (lane == 0) y[r * out_features + o] = v;
  }
}

const char* status(cudaError_t e) { return e == cudaSuccess ? nullptr : cudaGetErrorString(e); }

int grid_for(int64_t work, int threads) {
  const int64_t blocks = (work + threads - 1) / threads;
  return static_cast<int>(blocks < (1 << 20) ? (blocks > 0 ? blocks : 1) : (1 << 20));
}

// The wide kernel where the layout allows it (numel a multiple of 8, aligned words and
// outputs), else the byte-wise one; both compute the same values.
template <typename T>
const char* dequantize_as(const PeftCuda4bitWeight& w, T* out, cudaStream_t s) {
  const auto aligned = [](const void* p, uintptr_t n) { return reinterpret_cast<uintptr_t>(p) % n == 0; };
  if (w.numel % 8 == 0 && w.log2_blocksize >= 3 && aligned(w.packed, 4) && aligned(out, 16))
    dequantize8_kernel<T><<<grid_for(w.numel / 8, kThreads), kThreads, 0, s>>>(w, out);
  else
    dequantize_kernel<T><<<grid_for((w.numel + 1) / 2, kThreads), kThreads, 0, s>>>(w, out);
  return status(cudaGetLastError());
}

template <typename TX, int R>
const char* launch_gemv(const PeftCuda4bitWeight& w, int64_t out, int64_t in, const void* x, float* y,
                        cudaStream_t s) {
  const int warps = kThreads / 32;
  const int64_t blocks = (out + warps - 1) / warps;
  gemv_kernel<TX, R><<<static_cast<unsigned>(blocks), kThreads, 0, s>>>(w, out, in, static_cast<const TX*>(x), y);
  return status(cudaGetLastError());
}

template <typename TX>
const char* gemv_rows(const PeftCuda4bitWeight& w, int64_t out, int64_t in, const void* x, int rows, float* y,
                      cudaStream_t s) {
  switch (rows) {
    case 1: return launch_gemv<TX, 1>(w, out, in, x, y, s);
    case 2: return launch_gemv<TX, 2>(w, out, in, x, y, s);
    case 3: return launch_gemv<TX, 3>(w, out, in, x, y, s);
    case 4: return launch_gemv<TX, 4>(w, out, in, x, y, s);
    case 5: return launch_gemv<TX, 5>(w, out, in, x, y, s);
    case 6: return launch_gemv<TX, 6>(w, out, in, x, y, s);
    case 7: return launch_gemv<TX, 7>(w, out, in, x, y, s);
    case 8: return launch_gemv<TX, 8>(w, out, in, x, y, s);
    default: return "gemv_4bit: 1 to 8 rows";
  }
}

}  // namespace

extern "C" {

const char* peft_cuda_dequantize_4bit(const PeftCuda4bitWeight* w, int out_dtype, void* out, void* stream) {
  const auto s = static_cast<cudaStream_t>(stream);
  switch (out_dtype) {
    case kPeftCudaF32: return dequantize_as(*w, static_cast<float*>(out), s);
    case kPeftCudaBF16: return dequantize_as(*w, static_cast<__nv_bfloat16*>(out), s);
    case kPeftCudaF16: return dequantize_as(*w, static_cast<__half*>(out), s);
    default: return "dequantize_4bit: output dtype must be fp32, bf16 or fp16";
  }
}

const char* peft_cuda_gemv_4bit(const PeftCuda4bitWeight* w, int64_t out_features, int64_t in_features,
                                const void* x, int x_dtype, int rows, float* y, void* stream) {
  if (in_features % 32 != 0) return "gemv_4bit: in_features must be a multiple of 32";
  if (w->log2_blocksize < 5) return "gemv_4bit: blocks of at least 32 elements";
  if (out_features == 0) return nullptr;  // an empty grid is no valid launch
  const auto s = static_cast<cudaStream_t>(stream);
  switch (x_dtype) {
    case kPeftCudaF32: return gemv_rows<float>(*w, out_features, in_features, x, rows, y, s);
    case kPeftCudaBF16: return gemv_rows<__nv_bfloat16>(*w, out_features, in_features, x, rows, y, s);
    case kPeftCudaF16: return gemv_rows<__half>(*w, out_features, in_features, x, rows, y, s);
    default: return "gemv_4bit: x must be fp32, bf16 or fp16";
  }
}

}  // extern "C"
