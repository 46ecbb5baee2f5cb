// Keeps freed tensor memory in the process instead of returning it to the kernel.
#pragma once

namespace peft {

// glibc returns every large block (activations, gradients, logits chunks) to the kernel
// on free and page-faults it back, zeroed, on the next step: 10-15% of a CPU training
// step here. This raises the mmap and trim thresholds so such blocks are reused. Process
// wide, so the `peft` tool calls it once at start; a library user decides for itself.
void keep_freed_memory();

}  // namespace peft
