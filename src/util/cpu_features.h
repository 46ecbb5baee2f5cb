// What the CPU running us can do, asked once per process (the answers are cached): the
// instruction sets our kernels dispatch on.
#pragma once

namespace peft {

bool cpu_has_avx2_fma();  // AVX2 and FMA: the AVX2 bodies
bool cpu_has_avx512f();   // AVX-512 Foundation
bool cpu_has_avx512bw();  // and Byte/Word: every AVX-512 CPU but the Xeon Phi
// AVX512-BF16 with the AVX-512 subsets (F, BW, VL, DQ) every such CPU has and our bf16
// bodies use: the bf16 dot-product kernels
bool cpu_has_avx512_bf16();
bool cpu_has_amx_bf16();  // AMX-BF16 tiles (CPUID.(7,0):EDX[22]), where oneDNN's bf16 products excel

// Whether ATen's bf16 matrix products are fast on this CPU. They go through oneDNN only
// where the CPU has AVX-512 (BW, VL, DQ: ATen's mkldnn_bf16_device_check); elsewhere (an
// AVX2-only AMD EPYC, say) ATen falls back to its reference GEMM, measured ~100x slower
// than the fp32 product on the same machine.
bool cpu_has_fast_bf16_matmul();
// Whether ATen's fp16 matrix products are fast on this CPU: oneDNN takes them only with
// AVX512-FP16 (Sapphire Rapids on); elsewhere ATen's own loops run them, 4x slower than
// fp32 on a Zen 4 and slower still in some layouts.
bool cpu_has_fast_fp16_matmul();
// Whether to run bf16 products on this CPU: where they are fast, or anywhere when
// PEFT_BF16_ANY_CPU=1 says so (the tests of the bf16 paths, on small models).
bool cpu_bf16_matmul_wanted();

}  // namespace peft
