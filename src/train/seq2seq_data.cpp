#include "train/seq2seq_data.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <stdexcept>

#include "peft/seq2seq.h"

namespace peft {

Batch collate_seq2seq(const std::vector<const Example*>& xs, int64_t pad_id) {
  size_t src = 0, tgt = 0;
  for (const auto* e : xs) {
    src = std::max(src, e->input_ids.size());
    tgt = std::max(tgt, e->labels.size());
  }
  const auto b = static_cast<int64_t>(xs.size()), s = static_cast<int64_t>(src), t = static_cast<int64_t>(tgt);
  std::vector<int64_t> ids(b * s, pad_id), mask(b * s, 0), labels(b * t, -100);
  Batch out;
  for (int64_t i = 0; i < b; ++i) {
    const auto& e = *xs[i];
    for (size_t k = 0; k < e.input_ids.size(); ++k) {
      ids[i * s + k] = e.input_ids[k];
      mask[i * s + k] = 1;
    }
    for (size_t k = 0; k < e.labels.size(); ++k) {
      labels[i * t + k] = e.labels[k];
      if (e.labels[k] != -100) ++out.num_items;
    }
  }
  if (xs.front()->input_features.defined()) {  // audio: the features are all of one size
    std::vector<at::Tensor> features;
    for (const auto* e : xs) features.push_back(e->input_features);
    out.input_features = at::stack(features);
  } else {
    out.input_ids = at::tensor(ids, at::kLong).view({b, s});
    out.attention_mask = at::tensor(mask, at::kLong).view({b, s});
  }
  out.labels = at::tensor(labels, at::kLong).view({b, t});
  out.task_ids = task_ids_of(xs);
  return out;
}

at::Tensor seq2seq_loss_sum(PeftModel& peft, const Batch& b, at::Device dev, bool checkpoint_layers) {
  Seq2SeqLM* s2s = as_seq2seq(peft.model());
  if (!s2s) throw std::logic_error("seq2seq_loss_sum on a model that is not an encoder-decoder");
  Seq2SeqInputs in;
  in.checkpoint_layers = checkpoint_layers;
  if (b.input_features.defined()) {
    in.input_features = b.input_features.to(dev);
  } else {
    in.input_ids = b.input_ids.to(dev);
    in.attention_mask = b.attention_mask.to(dev);
  }
  const auto labels = b.labels.to(dev);
  in.decoder_input_ids = s2s->decoder_inputs_from_labels(labels);
  const auto logits = s2s->forward_seq2seq(in).logits.to(at::kFloat);
  return at::cross_entropy_loss(logits.reshape({-1, logits.size(-1)}), labels.reshape({-1}), {}, at::Reduction::Sum,
                                -100);
}

}  // namespace peft
