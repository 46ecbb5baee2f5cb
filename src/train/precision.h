// bf16 training without re-casting the frozen base at every step.
//
// Under autocast, every matrix product casts its fp32 weight to bf16 on every call, and
// frozen weights are never cached (autocast caches only leaves that require grad). Storing
// the frozen weights of matrix-product layers in bf16 once removes those casts and halves
// their memory. Frozen embedding tables are stored in bf16 too (a 152k-token table is a
// third of a 0.5B model) but look up into fp32. Adapters, norms and everything trainable
// stay fp32 (master weights), so the residual stream and the optimizer keep full precision.
#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>

namespace peft {

class Model;

// Stores in `dtype` the weight of every Linear/Conv1D layer (lm_head included) that is
// frozen and whose adapters do not read it, and of every frozen embedding without
// adapters (its lookups are cast back to the dtype it had). A weight tied to a layer that
// trains or has adapters that read it stays as it is. Returns the number of elements
// converted.
int64_t store_frozen_weights(Model& model, at::ScalarType dtype);

// Flush denormals to zero (FTZ/DAZ) on this thread's CPU: a stray denormal then never
// slows a step. Returns false where the CPU does not support it.
bool flush_denormals();

}  // namespace peft
