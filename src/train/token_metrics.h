// Token classification metrics, as transformers' token-classification example reports
// them: token accuracy over the labelled tokens, entity-level precision / recall / F1
// (seqeval's default mode), and a micro F1 over the tokens not labelled "O".
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace peft {

struct EntitySpan {
  std::string type;
  int64_t begin = 0, end = 0;  // token positions, inclusive
  bool operator==(const EntitySpan&) const = default;
};

// seqeval's get_entities (default, conlleval-compatible mode) on one sequence of tags:
// a span starts at B-X, S-X, or at an I-X / E-X that does not continue a span of type X,
// and ends before O, B-, S- or another type. Tags without a prefix count as in seqeval.
std::vector<EntitySpan> entity_spans(const std::vector<std::string>& tags);

class TokenClassificationMetrics {
 public:
  // Label names in id order (config.json's id2label); "O" is the outside label.
  explicit TokenClassificationMetrics(std::vector<std::string> labels);
  // One sequence: gold and predicted label ids of its labelled tokens (labels != -100).
  void add(const std::vector<int64_t>& gold, const std::vector<int64_t>& pred);
  // A batch: logits [b, s, num_labels], labels [b, s] with -100 where nothing is scored.
  void add_batch(const at::Tensor& logits, const at::Tensor& labels);
  // eval_accuracy, eval_precision, eval_recall, eval_f1 (entities), eval_token_f1.
  nlohmann::json to_json() const;

 private:
  std::vector<std::string> labels_;
  int64_t outside_ = -1;  // the "O" label's id; -1: none, every token counts as a mention
  int64_t tokens_ = 0, correct_ = 0;
  int64_t token_tp_ = 0, token_pred_ = 0, token_gold_ = 0;
  int64_t entity_tp_ = 0, entity_pred_ = 0, entity_gold_ = 0;
};

}  // namespace peft
