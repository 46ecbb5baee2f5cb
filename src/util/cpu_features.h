// What the CPU running us can do, asked once per process (the answers are cached): the
// instruction sets our kernels dispatch on.
#pragma once

namespace peft {

bool cpu_has_avx2_fma();  // AVX2 and FMA: the AVX2 bodies
bool cpu_has_avx512f();   // AVX-512 Foundation
// AVX512-BF16 with the AVX-512 subsets (F, BW, VL, DQ) every such CPU has and our bf16
// bodies use: the bf16 dot-product kernels
bool cpu_has_avx512_bf16();
bool cpu_has_amx_bf16();  // AMX-BF16 tiles (CPUID.(7,0):EDX[22]), where oneDNN's bf16 products excel

}  // namespace peft
