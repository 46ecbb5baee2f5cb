// What every decoder sequence classifier here shares (transformers'
// GenericForSequenceClassification): a decoder body, then `score` (Linear, no bias) on
// the hidden state of each row's last token that is not pad_token_id.
#pragma once

#include <optional>

#include "peft/layers.h"
#include "peft/model.h"

namespace peft {

// The position transformers pools for each row, [batch] int64: the rightmost token of
// `input_ids` that is not `pad` (0 for a row of padding only), so right and left padding
// both work. Without input_ids (soft prompts feed embeddings) or without a pad token the
// last position, as transformers; a batch of several rows without a pad token is refused.
at::Tensor last_non_pad_positions(const at::Tensor& input_ids, std::optional<int64_t> pad, int64_t batch,
                                  int64_t seq, const std::string& model);

// The id a sequence classifier's batches are padded with: config.json's pad_token_id when
// it indexes the vocabulary (decoders pool the last token that is not it, RoBERTa counts
// positions past it), else `fallback`.
int64_t classifier_pad_id(Model& model, int64_t fallback);

class DecoderClassifierBase : public Model {
 public:
  TaskKind task() const override { return TaskKind::kSequenceClassification; }
  ModelOutputs run(const ModelInputs& in) override;
  std::vector<std::string> head_parameter_names() const override { return {"score.weight"}; }
  Embedding* input_embeddings() override { return &input_embedding(); }
  std::shared_ptr<Linear> score;

 protected:
  // Reads pad_token_id (null or absent: none) and num_labels from the config.
  DecoderClassifierBase(const nlohmann::json& j, const std::string& where);
  // Registers score after the body, as transformers orders them.
  void add_score(int64_t hidden);
  virtual at::Tensor body_forward(const ModelInputs& in) = 0;
  virtual Embedding& input_embedding() = 0;

 private:
  std::optional<int64_t> pad_token_id_;
  int64_t num_labels_;
};

// <Family>ForSequenceClassification for a decoder body that has `forward(const
// ModelInputs&)` (final hidden states) and `token_embedding()`: the body registered under
// transformers' base_model_prefix, then `score`.
template <class Body>
class DecoderForSequenceClassification final : public DecoderClassifierBase {
 public:
  // type: transformers' class name; hidden: the width the body outputs; max_positions:
  // the body's bound on positions (learned position embeddings), 0 for none.
  DecoderForSequenceClassification(const nlohmann::json& j, const std::string& where, std::string type,
                                   std::string prefix, std::shared_ptr<Body> decoder, int64_t hidden,
                                   int64_t cache_layers, int64_t max_positions = 0)
      : DecoderClassifierBase(j, where), type_(std::move(type)), prefix_(std::move(prefix)),
        cache_layers_(cache_layers), max_positions_(max_positions) {
    body = register_module(prefix_, std::move(decoder));
    add_score(hidden);
  }
  std::string type_name() const override { return type_; }
  int64_t num_cache_layers() const override { return cache_layers_; }
  int64_t max_positions() const override { return max_positions_; }
  std::string base_model_prefix() const override { return prefix_; }

  std::shared_ptr<Body> body;

 protected:
  at::Tensor body_forward(const ModelInputs& in) override { return body->forward(in); }
  Embedding& input_embedding() override { return body->token_embedding(); }

 private:
  std::string type_, prefix_;
  int64_t cache_layers_, max_positions_;
};

}  // namespace peft
