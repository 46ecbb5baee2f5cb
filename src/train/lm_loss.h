// Next-token cross-entropy of a causal LM from its last hidden states, computed in chunks
// of rows so that the [tokens, vocab] logits never exist at once (with a 150k vocabulary,
// 2048 tokens of fp32 logits are 1.2 GB, and the unchunked loss keeps several copies).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace peft {

class AdaptableLayer;

// Sum over the positions whose next label is not -100 of -log softmax(head(h))[label]:
// hidden [batch, seq, dim], labels [batch, seq] (the label of position t+1 scores
// position t, as transformers' causal LM loss). Ignored positions get no logits at all.
//
// A plain frozen head (lm_head with no adapter, not trained) takes a fused path: each
// chunk's logits, loss and gradient with respect to its hidden rows are computed in one
// pass and the logits dropped; backward only scales the kept [rows, dim] gradient. Any
// other head is applied chunk by chunk under gradient checkpointing. Under autocast the
// products run in the autocast dtype and the softmax in fp32, as transformers' loss on
// bf16 logits does. Each chunk has `chunk_rows` rows (0: about 64 MB of fp32 logits, at
// least 256 rows; lm_loss.cpp says why). bf16 logits on CPU go through a fused row kernel
// that keeps nothing but them (the gradient overwrites them), so those chunks take 4x the
// rows in less memory: fewer chunks, each streaming the head's weight once forward and
// once back, were 20% of a step at 152k.
at::Tensor causal_lm_loss_sum(AdaptableLayer& head, const at::Tensor& hidden, const at::Tensor& labels,
                              int64_t chunk_rows = 0);

}  // namespace peft
