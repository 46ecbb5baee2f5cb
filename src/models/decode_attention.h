// Attention of one new position over a KV cache on CPU: a decode step.
//
// ATen's SDPA computes it as small matrix products. For bf16 on CPUs without AMX those go
// to a generic kernel: ~1.2 ms a layer at 1280 cached positions on Zen 4 (15 query heads
// over 5 key/value heads of 64), about 15x the time of reading K and V once. This kernel
// reads each key and value row once per query head, in fp32, with no products to set up.
#pragma once

#include <ATen/core/Tensor.h>

namespace peft {

// Whether decode_attention takes these: q [b, h, 1, d] on CPU, k and v [b, kv_h, T, d]
// (h a multiple of kv_h), all fp32 or all bf16 with contiguous rows, no gradient wanted,
// and a mask that is undefined (every key visible) or bool [b or 1, 1, 1, T].
bool decode_attention_applies(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask);

// The loop that runs: the widest the CPU has (AVX-512, else AVX2 where the head size is a
// multiple of 8, else portable C++), or at most AVX2 or the portable loop (tests compare
// the bodies on one machine; a body the CPU lacks falls back to the next).
enum class DecodeBody { kBest, kAvx2, kPortable };

// softmax(q k^T * scale, hidden keys at -inf) v, accumulated in fp32 and returned in q's
// dtype as [b, 1, h * d] (attend's layout). Query head i reads key/value head
// i / (h / kv_h). A row whose keys are all hidden gives zeros.
at::Tensor decode_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                            double scale, DecodeBody body = DecodeBody::kBest);

}  // namespace peft
