// Keeps freed tensor memory in the process instead of returning it to the kernel.
#pragma once

#include <cstddef>

namespace peft {

// glibc returns every large block (activations, gradients, logits chunks) to the kernel
// on free and page-faults it back, zeroed, on the next step: 10-15% of a CPU training
// step here. This raises the mmap and trim thresholds so such blocks are reused, and
// installs the tensor block cache below as LibTorch's CPU allocator. Process wide, so
// the `peft` tool calls it once at start; a library user decides for itself.
// PEFT_TENSOR_CACHE=0 in the environment leaves the cache out (glibc alone).
void keep_freed_memory();

// A training step allocates and frees the same large tensors (activations, gradients)
// every step; glibc's search of its large bins for each costs ~10% of a bf16 step. The
// cache keeps freed blocks of 256 KiB and more in size classes (8 per power of two) and
// hands them back on the next request of the class. At most `max_cached_bytes` sit free
// in it: a request that misses while the cache is over that releases every free block
// first, so memory stays bounded when shapes change (generation, varying lengths).
void install_tensor_block_cache(size_t max_cached_bytes = size_t{1} << 30);

struct TensorBlockCacheStats {
  size_t hits = 0, misses = 0, cached_bytes = 0;
};
TensorBlockCacheStats tensor_block_cache_stats();

}  // namespace peft
