// The frozen projections VeRA and PVeRA share among an adapter's layers, drawn as HF PEFT
// draws them (src/tuners/vera/model.cpp).
#pragma once

#include <memory>

#include "peft/tuner.h"
#include "peft/vera.h"

namespace peft {

// A [a_rows, max_in] then B [max_out, b_cols], both from one CPU generator seeded with
// `key`, each U(-b, b) with b = sqrt(6 / fan_in) (VeRA's _kaiming_init and PVeRA's
// kaiming_uniform_ draw the same numbers). VeRA: a_rows = b_cols = r; PVeRA: 2r and r.
VeraProjection draw_shared_projection(int64_t a_rows, int64_t b_cols, int64_t max_out, int64_t max_in, uint64_t key);

// HF's _find_dim over `targets` (each a Linear or Conv1D, else an error naming it and
// `method`), then draw_shared_projection for the largest out and in, moved to `device`.
std::shared_ptr<VeraProjection> projection_for_targets(const char* method, const NamedModules& targets,
                                                       int64_t a_rows, int64_t b_cols, uint64_t key, bool saved,
                                                       at::Device device);

}  // namespace peft
