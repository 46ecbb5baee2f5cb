// Encoder-decoder training (T5: {"input", "target"}; Whisper: train/audio_data.h): examples into batches, and their loss,
// as transformers computes it (labels = target ids + eos, -100 on padding; decoder inputs
// = labels shifted right after decoder_start_token_id).
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include "peft/peft_model.h"
#include "train/data.h"

namespace peft {

// input_ids right-padded with pad_id under attention_mask (audio: input_features
// stacked instead); labels [b, longest target]
// padded with -100; num_items = labelled tokens.
Batch collate_seq2seq(const std::vector<const Example*>& xs, int64_t pad_id);

// Summed cross-entropy of the decoder's logits against the labels (no shift: the decoder
// inputs are the shifted labels), -100 ignored.
at::Tensor seq2seq_loss_sum(PeftModel& peft, const Batch& b, at::Device dev, bool checkpoint_layers);

}  // namespace peft
