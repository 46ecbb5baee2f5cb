#include "util/cpu_features.h"

#include <cpuid.h>

#include <cstdlib>
#include <cstring>

namespace peft {

bool cpu_has_avx2_fma() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
}

bool cpu_has_avx512f() {
  static const bool yes = __builtin_cpu_supports("avx512f");
  return yes;
}

bool cpu_has_avx512bw() {
  static const bool yes = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
  return yes;
}

bool cpu_has_avx512_bf16() {
  static const bool yes = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                          __builtin_cpu_supports("avx512bf16");
  return yes;
}

bool cpu_has_amx_bf16() {
  static const bool yes = [] {
    unsigned a = 0, b = 0, c = 0, d = 0;
    return __get_cpuid_count(7, 0, &a, &b, &c, &d) && (d >> 22 & 1);
  }();
  return yes;
}

bool cpu_has_fast_bf16_matmul() {
#if defined(__x86_64__) || defined(__i386__)
  static const bool fast = __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                           __builtin_cpu_supports("avx512dq");
  return fast;
#else
  return true;  // ATen's check is x86-specific; elsewhere trust the platform's bf16 path
#endif
}

bool cpu_has_fast_fp16_matmul() {
#if defined(__x86_64__) || defined(__i386__)
  static const bool fast = __builtin_cpu_supports("avx512fp16");
  return fast;
#else
  return true;
#endif
}

bool cpu_bf16_matmul_wanted() {
  if (cpu_has_fast_bf16_matmul()) return true;
  const char* any = std::getenv("PEFT_BF16_ANY_CPU");
  return any && std::strcmp(any, "1") == 0;
}

}  // namespace peft
