// at::parallel_for for our sources. ATen's parallel_for is a header template: its OpenMP
// region exists only where the calling source is compiled with -fopenmp, and without it
// every chunk silently runs on the calling thread. So a source that includes this header
// must be listed in PEFT_OPENMP_SOURCES (CMakeLists.txt), and this check says so.
#pragma once
#include <ATen/Parallel.h>

#if AT_PARALLEL_OPENMP && !defined(_OPENMP)
#error "this source calls at::parallel_for: list it in PEFT_OPENMP_SOURCES (CMakeLists.txt)"
#endif
