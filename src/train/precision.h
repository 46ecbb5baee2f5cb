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
#include <string>

namespace peft {

class Model;

// Stores in `dtype` the weight of every Linear/Conv1D layer (lm_head included) that is
// frozen and whose adapters do not read it, and of every frozen embedding without
// adapters (its lookups are cast back to the dtype it had). A weight tied to a layer that
// trains or has adapters that read it stays as it is. Returns the number of elements
// converted.
int64_t store_frozen_weights(Model& model, at::ScalarType dtype);

// The precision a run on `device` computes in: "bf16" as asked where bf16 products are
// fast; on a CPU without them "fp32", after one line on stderr saying why (bf16 storage
// and autocast would send every product through the slow path). PEFT_BF16_ANY_CPU=1 in
// the environment keeps bf16 anyway (the tests of the bf16 path, on small models).
std::string effective_precision(const std::string& requested, bool on_cpu);

// Flush denormals to zero (FTZ/DAZ) on this thread's CPU: a stray denormal then never
// slows a step. Returns false where the CPU does not support it.
bool flush_denormals();

}  // namespace peft
