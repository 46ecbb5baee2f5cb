#include "util/allocator.h"

#include <malloc.h>

namespace peft {

void keep_freed_memory() {
  // 32 MiB is glibc's largest mmap threshold (DEFAULT_MMAP_THRESHOLD_MAX on 64-bit);
  // setting it also stops the dynamic threshold from dropping back.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);  // keep up to 1 GiB of free heap top
  mallopt(M_TOP_PAD, 64 << 20);        // grow the heap in 64 MiB steps
}

}  // namespace peft
