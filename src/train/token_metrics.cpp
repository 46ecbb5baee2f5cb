#include "train/token_metrics.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <set>
#include <tuple>

namespace peft {

namespace {

// seqeval's end_of_chunk / start_of_chunk, rule for rule.
bool end_of_chunk(char prev_tag, char tag, const std::string& prev_type, const std::string& type) {
  if (prev_tag == 'E' || prev_tag == 'S') return true;
  if ((prev_tag == 'B' || prev_tag == 'I') && (tag == 'B' || tag == 'S' || tag == 'O')) return true;
  return prev_tag != 'O' && prev_tag != '.' && prev_type != type;
}

bool start_of_chunk(char prev_tag, char tag, const std::string& prev_type, const std::string& type) {
  if (tag == 'B' || tag == 'S') return true;
  if ((prev_tag == 'E' || prev_tag == 'S' || prev_tag == 'O') && (tag == 'E' || tag == 'I')) return true;
  return tag != 'O' && tag != '.' && prev_type != type;
}

double ratio(int64_t a, int64_t b) { return b > 0 ? static_cast<double>(a) / static_cast<double>(b) : 0.0; }
double f1(double p, double r) { return p + r > 0 ? 2 * p * r / (p + r) : 0.0; }

}  // namespace

std::vector<EntitySpan> entity_spans(const std::vector<std::string>& tags) {
  std::vector<EntitySpan> out;
  char prev_tag = 'O';
  std::string prev_type;
  int64_t begin = 0;
  const auto n = static_cast<int64_t>(tags.size());
  for (int64_t i = 0; i <= n; ++i) {  // one "O" past the end closes the last span
    const std::string chunk = i < n ? tags[i] : "O";
    const char tag = chunk.empty() ? 'O' : chunk[0];
    // Python's chunk[1:].split('-', maxsplit=1)[-1] or '_'
    std::string type = chunk.size() > 1 ? chunk.substr(1) : "";
    if (auto dash = type.find('-'); dash != std::string::npos) type = type.substr(dash + 1);
    if (type.empty()) type = "_";
    if (end_of_chunk(prev_tag, tag, prev_type, type)) out.push_back({prev_type, begin, i - 1});
    if (start_of_chunk(prev_tag, tag, prev_type, type)) begin = i;
    prev_tag = tag;
    prev_type = type;
  }
  return out;
}

TokenClassificationMetrics::TokenClassificationMetrics(std::vector<std::string> labels) : labels_(std::move(labels)) {
  auto it = std::find(labels_.begin(), labels_.end(), "O");
  if (it != labels_.end()) outside_ = it - labels_.begin();
}

void TokenClassificationMetrics::add(const std::vector<int64_t>& gold, const std::vector<int64_t>& pred) {
  std::vector<std::string> gold_tags, pred_tags;
  auto name = [&](int64_t id) {
    return id >= 0 && id < static_cast<int64_t>(labels_.size()) ? labels_[id] : "LABEL_" + std::to_string(id);
  };
  for (size_t i = 0; i < gold.size(); ++i) {
    ++tokens_;
    correct_ += gold[i] == pred[i];
    token_gold_ += gold[i] != outside_;
    token_pred_ += pred[i] != outside_;
    token_tp_ += gold[i] == pred[i] && gold[i] != outside_;
    gold_tags.push_back(name(gold[i]));
    pred_tags.push_back(name(pred[i]));
  }
  const auto g = entity_spans(gold_tags), p = entity_spans(pred_tags);
  std::set<std::tuple<std::string, int64_t, int64_t>> gold_set;
  for (const auto& e : g) gold_set.emplace(e.type, e.begin, e.end);
  entity_gold_ += static_cast<int64_t>(g.size());
  entity_pred_ += static_cast<int64_t>(p.size());
  for (const auto& e : p) entity_tp_ += gold_set.count({e.type, e.begin, e.end});
}

void TokenClassificationMetrics::add_batch(const at::Tensor& logits, const at::Tensor& labels) {
  const at::Tensor pred = logits.argmax(-1).to(at::kCPU).contiguous(), gold = labels.to(at::kCPU).contiguous();
  const auto* p = pred.data_ptr<int64_t>();
  const auto* l = gold.data_ptr<int64_t>();
  const int64_t b = gold.size(0), s = gold.size(1);
  for (int64_t i = 0; i < b; ++i) {
    std::vector<int64_t> gs, ps;
    for (int64_t t = 0; t < s; ++t)
      if (l[i * s + t] != -100) {
        gs.push_back(l[i * s + t]);
        ps.push_back(p[i * s + t]);
      }
    add(gs, ps);
  }
}

nlohmann::json TokenClassificationMetrics::to_json() const {
  const double p = ratio(entity_tp_, entity_pred_), r = ratio(entity_tp_, entity_gold_);
  const double tp = ratio(token_tp_, token_pred_), tr = ratio(token_tp_, token_gold_);
  return {{"eval_accuracy", ratio(correct_, tokens_)}, {"eval_precision", p}, {"eval_recall", r},
          {"eval_f1", f1(p, r)}, {"eval_token_f1", f1(tp, tr)}};
}

}  // namespace peft
