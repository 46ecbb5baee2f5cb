// What encoder-decoder models share: the forward that lets an installed input adapter
// rewrite the inputs (as Model::forward does for one token sequence), and label shifting.
#include "peft/seq2seq.h"

#include <ATen/ATen.h>

#include <stdexcept>

#include "peft/layers.h"

namespace peft {

Seq2SeqOutputs Seq2SeqLM::forward_seq2seq(const Seq2SeqInputs& in) {
  // Every Seq2SeqLM is a Model (T5ForConditionalGeneration derives from both).
  auto* model = dynamic_cast<Model*>(this);
  if (!model || !model->input_adapter) return run_seq2seq(in);
  auto* adapter = dynamic_cast<Seq2SeqInputAdapter*>(model->input_adapter);
  if (!adapter)
    throw std::invalid_argument(model->input_adapter->type_name() +
                                " does not work on encoder-decoder models such as " + model->type_name());
  // Ids outside the vocabulary are refused by name before the adapter embeds them.
  if (Embedding* emb = model->input_embeddings(); emb && in.input_ids.defined() && in.input_ids.numel() > 0) {
    const int64_t low = in.input_ids.min().item<int64_t>(), high = in.input_ids.max().item<int64_t>();
    if (low < 0 || high >= emb->num_embeddings)
      throw std::invalid_argument("token id " + std::to_string(low < 0 ? low : high) + " is out of range: " +
                                  model->type_name() + " has a vocabulary of " + std::to_string(emb->num_embeddings));
  }
  Seq2SeqInputs adapted = in;
  adapter->prepare_seq2seq(*model, adapted);
  return run_seq2seq(adapted);
}

void Seq2SeqLM::refuse_one_sequence(const std::string& model, const std::string& takes) {
  throw std::invalid_argument(model + " is an encoder-decoder model: it takes " + takes +
                              " (forward_seq2seq), not one token sequence");
}

Seq2SeqLM* as_seq2seq(Model& model) { return dynamic_cast<Seq2SeqLM*>(&model); }

at::Tensor Seq2SeqLM::decoder_inputs_from_labels(const at::Tensor& labels) const {
  return shift_right(labels, decoder_start_token_id(), pad_token_id());
}

at::Tensor shift_right(const at::Tensor& labels, int64_t decoder_start, int64_t pad) {
  auto shifted = at::zeros_like(labels);
  shifted.narrow(1, 1, labels.size(1) - 1).copy_(labels.narrow(1, 0, labels.size(1) - 1));
  shifted.select(1, 0).fill_(decoder_start);
  return shifted.masked_fill_(shifted == -100, pad);
}

}  // namespace peft
