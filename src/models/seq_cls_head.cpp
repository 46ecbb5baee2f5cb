#include "models/seq_cls_head.h"

#include <ATen/ATen.h>

#include "models/config_reader.h"
#include "models/model_config.h"

namespace peft {

at::Tensor last_non_pad_positions(const at::Tensor& input_ids, std::optional<int64_t> pad, int64_t batch,
                                  int64_t seq, const std::string& model) {
  if (!pad && batch != 1)
    throw std::invalid_argument(model + " cannot classify a batch of " + std::to_string(batch) +
                                " rows without a padding token: config.json has no pad_token_id");
  if (!pad || !input_ids.defined()) return at::full({batch}, seq - 1, at::kLong);
  // transformers: argmax(arange(seq) * (ids != pad)); ties (all padding) give index 0.
  const auto non_pad = input_ids.ne(*pad).to(at::kInt);
  const auto indices = at::arange(seq, non_pad.options());
  return (indices * non_pad).argmax(-1);
}

int64_t classifier_pad_id(Model& model, int64_t fallback) {
  if (model.task() != TaskKind::kSequenceClassification) return fallback;
  const auto& cfg = model.config();
  const auto p = cfg.find("pad_token_id");
  if (p == cfg.end() || !p->is_number_integer()) return fallback;
  const auto* emb = model.input_embeddings();
  const auto id = p->get<int64_t>();
  return emb && id >= 0 && id < emb->num_embeddings ? id : fallback;
}

DecoderClassifierBase::DecoderClassifierBase(const nlohmann::json& j, const std::string& where) : Model(j) {
  ConfigReader r(j, where);
  if (r.has("pad_token_id")) pad_token_id_ = r.get<int64_t>("pad_token_id");
  num_labels_ = num_labels_of(j, where);
}

void DecoderClassifierBase::add_score(int64_t hidden) {
  score = register_module("score", std::make_shared<Linear>(hidden, num_labels_, false));
}

ModelOutputs DecoderClassifierBase::run(const ModelInputs& in) {
  ModelOutputs out;
  out.last_hidden_state = body_forward(in);
  const auto& h = out.last_hidden_state;
  const int64_t batch = h.size(0), seq = h.size(1);
  if (seq == 0) throw std::invalid_argument(type_name() + ": cannot classify an empty sequence");
  // `score` is per position, so pooling before it gives transformers' pooled logits
  // without computing the others.
  const auto cols = last_non_pad_positions(in.input_ids, pad_token_id_, batch, seq, type_name()).to(h.device());
  const auto rows = at::arange(batch, cols.options());
  out.logits = score->forward(h.flatten(0, 1).index_select(0, rows * seq + cols));
  return out;
}

}  // namespace peft
