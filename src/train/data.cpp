#include "train/data.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <iostream>
#include <sstream>

#include "peft/npy.h"
#include "train/seq2seq_data.h"
#include "train/token_data.h"
#include "util/json_file.h"

namespace peft {

namespace {

std::string detect_format(const nlohmann::json& j) {
  if (j.contains("input_ids")) return "input_ids";
  if (j.contains("input") && j.contains("target")) return "input_target";
  if (is_token_tags_line(j)) return "token_tags";
  if (j.contains("messages") || j.contains("conversations")) return "messages";
  if (j.contains("prompt") && j.contains("completion")) return "prompt_completion";
  if (j.contains("text") && j.contains("label")) return "text_label";
  if (j.contains("text")) return "text";
  return "";
}

// A line's field; lines may differ in which fields they have, so every access checks.
const nlohmann::json& field(const nlohmann::json& j, const char* key) {
  if (!j.is_object() || !j.contains(key)) throw std::runtime_error(std::string("missing field '") + key + "'");
  return j.at(key);
}

const std::string& str_field(const nlohmann::json& j, const char* key) {
  const auto& v = field(j, key);
  if (!v.is_string()) throw std::runtime_error(std::string("field '") + key + "' must be a string, got " + quote_json(v));
  return v.get_ref<const std::string&>();
}

std::optional<int64_t> eos_id(const Tokenizer& t) {
  auto eos = t.special_token("eos_token");
  return eos ? t.token_to_id(*eos) : std::nullopt;
}

// {"messages": [...]} as it is, or ShareGPT's {"conversations": [{"from", "value"}]} in
// the same form. Messages pass to the chat template whole (tool calls, null content).
nlohmann::ordered_json chat_messages(const nlohmann::json& j) {
  static const std::map<std::string, std::string> kShareGpt = {
      {"human", "user"}, {"user", "user"},   {"gpt", "assistant"},  {"assistant", "assistant"}, {"model", "assistant"},
      {"system", "system"}, {"tool", "tool"}, {"function", "tool"}, {"observation", "tool"}};
  nlohmann::ordered_json out = nlohmann::ordered_json::array();
  if (j.contains("messages")) {
    const auto& messages = field(j, "messages");
    if (!messages.is_array() || messages.empty()) throw std::runtime_error("'messages' is not a non-empty list");
    for (const auto& m : messages) {
      str_field(m, "role");
      if (m.contains("content") && !m.at("content").is_null() && !m.at("content").is_string() &&
          !m.at("content").is_array())
        throw std::runtime_error("a message's 'content' must be a string, a list of parts or null");
      out.push_back(nlohmann::ordered_json::parse(m.dump()));
    }
    return out;
  }
  const auto& conv = field(j, "conversations");
  if (!conv.is_array() || conv.empty()) throw std::runtime_error("'conversations' is not a non-empty list");
  for (const auto& m : conv) {
    const std::string& from = str_field(m, "from");
    auto it = kShareGpt.find(from);
    if (it == kShareGpt.end()) throw std::runtime_error("unknown ShareGPT speaker '" + from + "'");
    out.push_back({{"role", it->second}, {"content", str_field(m, "value")}});
  }
  return out;
}

// A conversation through the tokenizer's chat template. Loss on the assistant turns (all
// of them, as TRL's assistant-only loss; or the last), each from where the template opens
// the turn (add_generation_prompt) to where it closes it.
void chat_example(const nlohmann::ordered_json& msgs, const Tokenizer& tok, const DataOptions& o, Example& ex) {
  std::vector<size_t> turns;
  for (size_t i = 0; i < msgs.size(); ++i)
    if (msgs[i].value("role", std::string()) == "assistant") turns.push_back(i);
  if (turns.empty()) throw std::runtime_error("the conversation has no assistant message to learn from");
  if (o.last_turn_only) turns.erase(turns.begin(), turns.end() - 1);
  auto length = [&](size_t n, bool open_turn) {
    nlohmann::ordered_json part = nlohmann::ordered_json::array();
    for (size_t i = 0; i < n; ++i) part.push_back(msgs[i]);
    // The template carries its own markers (BOS included), as transformers tokenizes it.
    return tok.encode(tok.apply_chat_template(part, open_turn), false).ids.size();
  };
  ex.input_ids = tok.encode(tok.apply_chat_template(msgs, false), false).ids;
  if (!o.completion_only_loss) {
    ex.labels = ex.input_ids;
    return;
  }
  ex.labels.assign(ex.input_ids.size(), -100);
  for (size_t t : turns) {
    const size_t begin = length(t, true), end = std::min(length(t + 1, false), ex.labels.size());
    for (size_t i = begin; i < end; ++i) ex.labels[i] = ex.input_ids[i];
  }
}

// A regression or multi-label line's label: num_labels numbers (one may stand alone for a
// single regression target); multi-label targets lie in [0, 1].
void float_targets(const nlohmann::json& l, const std::string& problem, int64_t num_labels, Example& ex) {
  const bool multi = problem == "multi_label_classification";
  const nlohmann::json list = l.is_array() ? l : nlohmann::json::array({l});
  if (multi && !l.is_array())
    throw std::runtime_error("multi_label_classification needs a list of " + std::to_string(num_labels) +
                             " 0/1 labels, got " + quote_json(l));
  if (num_labels > 0 && static_cast<int64_t>(list.size()) != num_labels)
    throw std::runtime_error(problem + " needs " + std::to_string(num_labels) + " label value(s) (num_labels), got " +
                             quote_json(l));
  for (const auto& v : list) {
    if (!v.is_number() || !std::isfinite(v.get<double>()))
      throw std::runtime_error(problem + " labels must be numbers, got " + quote_json(l));
    if (multi && (v.get<double>() < 0 || v.get<double>() > 1))
      throw std::runtime_error("multi_label_classification labels must lie in [0, 1], got " + quote_json(l));
    ex.targets.push_back(v.get<float>());
  }
}

Example make_example(const nlohmann::json& j, const std::string& format, const DataOptions& o) {
  if (o.token_classification != (format == "token_tags"))
    throw std::runtime_error(o.token_classification
                                 ? "token classification needs {\"tokens\", \"tags\"} lines"
                                 : "{\"tokens\", \"tags\"} lines are for token classification models (*ForTokenClassification)");
  if (o.seq2seq != (format == "input_target"))
    throw std::runtime_error(o.seq2seq ? "encoder-decoder models train on {\"input\", \"target\"} lines"
                                       : "{\"input\", \"target\"} lines are for encoder-decoder models (T5)");
  Example ex;
  auto need_tok = [&]() -> const Tokenizer& {
    if (!o.tokenizer) throw std::runtime_error("format '" + format + "' needs a tokenizer");
    return *o.tokenizer;
  };
  if (format == "input_ids") {
    const auto& ids = field(j, "input_ids");
    if (!ids.is_array()) throw std::runtime_error("'input_ids' is not a list");
    for (const auto& v : ids) {
      if (!v.is_number_integer() || v.get<int64_t>() < 0) throw std::runtime_error("'input_ids' holds a non-id");
      if (o.vocab_size > 0 && v.get<int64_t>() >= o.vocab_size)
        throw std::runtime_error("token id " + std::to_string(v.get<int64_t>()) + " is out of range for the model's " +
                                 std::to_string(o.vocab_size) + "-token vocabulary");
      ex.input_ids.push_back(v.get<int64_t>());
    }
    ex.labels = ex.input_ids;
  } else if (format == "text") {
    const auto& tok = need_tok();
    ex.input_ids = tok.encode(str_field(j, "text")).ids;
    if (auto e = eos_id(tok)) ex.input_ids.push_back(*e);
    ex.labels = ex.input_ids;
  } else if (format == "prompt_completion") {
    const auto& tok = need_tok();
    const std::string prompt = str_field(j, "prompt");
    const size_t prompt_len = tok.encode(prompt).ids.size();
    ex.input_ids = tok.encode(prompt + str_field(j, "completion")).ids;
    if (auto e = eos_id(tok)) ex.input_ids.push_back(*e);
    ex.labels = ex.input_ids;
    if (o.completion_only_loss)
      for (size_t i = 0; i < std::min(prompt_len, ex.labels.size()); ++i) ex.labels[i] = -100;
  } else if (format == "input_target") {
    // As transformers' seq2seq preprocessing: tokenizer(input), tokenizer(text_target=target),
    // whose ids end with eos (added here when the tokenizer's template does not).
    const auto& tok = need_tok();
    ex.seq2seq = true;
    ex.input_ids = tok.encode(str_field(j, "input")).ids;
    ex.labels = tok.encode_target(str_field(j, "target")).ids;
    if (auto e = eos_id(tok); e && (ex.labels.empty() || ex.labels.back() != *e)) ex.labels.push_back(*e);
    if (ex.labels.empty()) throw std::runtime_error("the target has no tokens");
    if (static_cast<int64_t>(ex.labels.size()) > o.max_length) ex.labels.resize(o.max_length);
  } else if (format == "messages") {
    chat_example(chat_messages(j), need_tok(), o, ex);
  } else if (format == "token_tags") {
    ex = token_tags_example(j, o);
  } else if (format == "text_label") {
    const auto& tok = need_tok();
    ex.input_ids = tok.encode(str_field(j, "text")).ids;
    const auto& l = field(j, "label");
    const std::string problem =
        o.problem_type.empty() ? problem_type_of(nlohmann::json::object(), o.num_labels, l.is_array()) : o.problem_type;
    if (problem != "single_label_classification") {
      float_targets(l, problem, o.num_labels, ex);
    } else if (l.is_number_integer()) ex.class_label = l.get<int64_t>();
    else if (l.is_string() && o.label2id.contains(l.get<std::string>()) && o.label2id[l.get<std::string>()].is_number_integer())
      ex.class_label = o.label2id[l.get<std::string>()].get<int64_t>();
    else throw std::runtime_error("label " + quote_json(l) + " is neither an index nor a name in config.json's label2id");
    if (ex.targets.empty() && (ex.class_label < 0 || (o.num_labels > 0 && ex.class_label >= o.num_labels)))
      throw std::runtime_error("label " + std::to_string(ex.class_label) + " is out of range: the model has " +
                               std::to_string(o.num_labels) + " labels");
  } else {
    throw std::runtime_error("unknown format '" + format + "'");
  }
  if (static_cast<int64_t>(ex.input_ids.size()) > o.max_length) {
    ex.input_ids.resize(o.max_length);
    if (!ex.labels.empty() && !ex.seq2seq) ex.labels.resize(o.max_length);
  }
  if (ex.input_ids.empty()) throw std::runtime_error("the example has no tokens");
  return ex;
}

}  // namespace

std::string problem_type_of(const nlohmann::json& config, int64_t num_labels, bool float_labels) {
  static const char* kKnown[] = {"regression", "single_label_classification", "multi_label_classification"};
  const auto it = config.find("problem_type");
  if (it != config.end() && !it->is_null()) {
    const std::string p = it->is_string() ? it->get<std::string>() : it->dump();
    for (const char* k : kKnown)
      if (p == k) return p;
    throw std::runtime_error("config.json: problem_type '" + p +
                             "' is not one of regression, single_label_classification, multi_label_classification");
  }
  if (num_labels == 1) return "regression";
  return float_labels ? "multi_label_classification" : "single_label_classification";
}

std::vector<Example> load_examples(const std::string& path, const DataOptions& o) {
  return parse_examples(read_file_bytes(path), path, o);
}

namespace {
// Multitask tuners route each example by its task: every line has one, or none does, and
// packing (several examples in a row) cannot keep them apart.
void check_task_ids(const std::vector<Example>& xs, const std::string& path, bool packing) {
  const auto with = std::count_if(xs.begin(), xs.end(), [](const Example& e) { return e.task_id >= 0; });
  if (with == 0) return;
  if (with != static_cast<int64_t>(xs.size()))
    throw std::runtime_error(path + ": " + std::to_string(with) + " of " + std::to_string(xs.size()) +
                             " examples have \"task_ids\"; give every line one");
  if (packing) throw std::runtime_error(path + ": packing puts several examples in a row; \"task_ids\" need one per row");
}
// CPT's token types: every line has them, or none does; packing would drop them.
void check_input_type_masks(const std::vector<Example>& xs, const std::string& path, bool packing) {
  const auto with = std::count_if(xs.begin(), xs.end(), [](const Example& e) { return !e.input_type_mask.empty(); });
  if (with == 0) return;
  if (with != static_cast<int64_t>(xs.size()))
    throw std::runtime_error(path + ": " + std::to_string(with) + " of " + std::to_string(xs.size()) +
                             " examples have \"input_type_mask\"; give every line one");
  if (packing) throw std::runtime_error(path + ": packing cannot keep \"input_type_mask\" (CPT trains on whole rows)");
}
}  // namespace

std::vector<Example> parse_examples(const std::string& jsonl, const std::string& path, const DataOptions& o) {
  std::istringstream in(jsonl);
  std::vector<Example> out;
  std::string format = o.format, line;
  size_t skipped = 0;
  for (size_t n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    try {
      auto j = parse_json(line, "");
      if (!j.is_object()) throw std::runtime_error("not a JSON object");
      if (format == "auto") {
        format = detect_format(j);
        if (format.empty()) throw std::runtime_error("no known fields (input_ids, text, prompt/completion, messages)");
      }
      out.push_back(make_example(j, format, o));
      if (j.contains("task_ids")) {
        const auto& t = j["task_ids"];
        if (!t.is_number_integer() || t.get<int64_t>() < 0)
          throw std::runtime_error("'task_ids' must be a non-negative integer (the example's task), got " + t.dump());
        out.back().task_id = t.get<int64_t>();
      }
      if (j.contains("input_type_mask")) {  // CPT: the tokens' types, as HF's CPT batches carry them
        auto& ex = out.back();
        const auto& types = j["input_type_mask"];
        const char* bad = "'input_type_mask' must be a list of non-negative integers, one per token";
        if (!types.is_array()) throw std::runtime_error(bad);
        for (const auto& v : types) {
          if (!v.is_number_integer() || v.get<int64_t>() < 0) throw std::runtime_error(bad);
          ex.input_type_mask.push_back(v.get<int64_t>());
        }
        if (ex.input_type_mask.size() > ex.input_ids.size() && static_cast<int64_t>(ex.input_ids.size()) == o.max_length)
          ex.input_type_mask.resize(ex.input_ids.size());  // cut with the ids at max_length
        if (ex.input_type_mask.size() != ex.input_ids.size())
          throw std::runtime_error("'input_type_mask' has " + std::to_string(ex.input_type_mask.size()) +
                                   " values for " + std::to_string(ex.input_ids.size()) + " tokens");
      }
    } catch (const std::exception& e) {
      const std::string msg = path + ":" + std::to_string(n) + ": " + e.what();
      if (!o.skip_bad_lines) throw std::runtime_error(msg + " (on_bad_line=skip to skip such lines)");
      std::cerr << "warning: skipped " << msg << "\n";
      ++skipped;
    }
  }
  if (out.empty()) throw std::runtime_error(path + ": no usable examples");
  if (!o.classification) {
    // A causal example predicts its labels from position 1 on; truncation can leave none.
    size_t no_loss = 0;
    for (const auto& e : out)
      no_loss += std::all_of(e.labels.begin() + std::min<size_t>(1, e.labels.size()), e.labels.end(),
                             [](int64_t l) { return l == -100; });
    if (no_loss == out.size())
      throw std::runtime_error(path + ": no example has a token to learn (all completions were cut off by max_length " +
                               std::to_string(o.max_length) + ", or are empty)");
    if (no_loss > 0)
      std::cerr << "warning: " << path << ": " << no_loss << " of " << out.size()
                << " examples have no token to learn (completion cut off by max_length " << o.max_length
                << " or empty); they add nothing to the loss\n";
  }
  if (o.token_classification) {
    size_t labelled = 0;
    for (const auto& e : out) {
      labelled += std::count_if(e.labels.begin(), e.labels.end(), [](int64_t l) { return l != -100; });
    }
    if (labelled == 0) throw std::runtime_error(path + ": no example has a labelled token");
  } else if (o.classification) {
    for (const auto& e : out)
      if (e.class_label < 0 && e.targets.empty())
        throw std::runtime_error(path + ": classification needs {\"text\", \"label\"} lines");
    // One batch cannot mix class indices with float targets (nor target counts).
    for (const auto& e : out)
      if (e.targets.size() != out.front().targets.size())
        throw std::runtime_error(path + ": lines mix class labels and lists of " +
                                 std::to_string(std::max(e.targets.size(), out.front().targets.size())) +
                                 " float labels");
  }
  check_task_ids(out, path, o.packing && !o.classification);
  check_input_type_masks(out, path, o.packing && !o.classification);
  if (o.packing && !o.classification) out = pack_examples(out, o.max_length);
  return out;
}

namespace {
// Appends one example to a row: its ids, its labels with the first one -100, positions
// from 0 (or its own, when it is a packed row already).
void append_example(Example& row, const Example& e) {
  row.input_ids.insert(row.input_ids.end(), e.input_ids.begin(), e.input_ids.end());
  const size_t first = row.labels.size();
  row.labels.insert(row.labels.end(), e.labels.begin(), e.labels.end());
  if (e.position_ids.empty()) {
    if (first < row.labels.size()) row.labels[first] = -100;
    for (size_t i = 0; i < e.input_ids.size(); ++i) row.position_ids.push_back(static_cast<int64_t>(i));
  } else {
    row.position_ids.insert(row.position_ids.end(), e.position_ids.begin(), e.position_ids.end());
  }
}
}  // namespace

std::vector<Example> pack_examples(const std::vector<Example>& xs, int64_t max_length) {
  std::vector<size_t> order(xs.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return xs[a].input_ids.size() > xs[b].input_ids.size(); });
  std::vector<Example> rows;
  std::multimap<int64_t, size_t> room;  // free tokens -> row
  for (size_t i : order) {
    const auto n = static_cast<int64_t>(xs[i].input_ids.size());
    auto it = room.lower_bound(n);  // the fullest row it fits in
    size_t r;
    if (it == room.end()) {
      r = rows.size();
      rows.emplace_back();
    } else {
      r = it->second;
      room.erase(it);
    }
    append_example(rows[r], xs[i]);
    const int64_t left = max_length - static_cast<int64_t>(rows[r].input_ids.size());
    if (left > 0) room.emplace(left, r);
  }
  return rows;
}

std::vector<Example> load_image_examples(const std::string& images_npy, const std::string& labels_npy,
                                         int64_t num_labels) {
  if (labels_npy.empty()) throw std::runtime_error(images_npy + ": image data needs label_file (a .npy of class indices)");
  auto images = load_npy(images_npy);
  auto labels = load_npy(labels_npy);
  if (labels.is_floating_point() || labels.scalar_type() == at::kBool)
    throw std::runtime_error(labels_npy + ": labels must be integers, got " + c10::toString(labels.scalar_type()));
  labels = labels.to(at::kLong);
  if (images.dim() != 4) throw std::runtime_error(images_npy + ": expected [N, C, H, W], got " + c10::str(images.sizes()));
  if (labels.dim() != 1 || labels.size(0) != images.size(0))
    throw std::runtime_error(labels_npy + ": expected [" + std::to_string(images.size(0)) + "] labels, got " +
                             c10::str(labels.sizes()));
  if (!labels.is_floating_point() && labels.numel() > 0) {
    const int64_t lo = labels.min().item<int64_t>(), hi = labels.max().item<int64_t>();
    if (lo < 0 || (num_labels > 0 && hi >= num_labels))
      throw std::runtime_error(labels_npy + ": label " + std::to_string(lo < 0 ? lo : hi) + " is out of range: the model has " +
                               std::to_string(num_labels) + " labels");
  }
  images = images.scalar_type() == at::kByte ? images.to(at::kFloat) / 255.0 : images.to(at::kFloat);
  std::vector<Example> out(images.size(0));
  for (int64_t i = 0; i < images.size(0); ++i) {
    out[i].pixel_values = images[i];
    out[i].class_label = labels[i].item<int64_t>();
  }
  return out;
}

at::Tensor task_ids_of(const std::vector<const Example*>& xs) {
  if (xs.empty() || xs.front()->task_id < 0) return {};
  std::vector<int64_t> ids;
  for (const auto* e : xs) ids.push_back(e->task_id);
  return at::tensor(ids, at::kLong);
}

Batch collate(const std::vector<const Example*>& xs, int64_t pad_id, bool causal, bool flatten) {
  if (!xs.empty() && xs.front()->pixel_values.defined()) {
    Batch out;
    std::vector<at::Tensor> px;
    std::vector<int64_t> labels;
    for (const auto* e : xs) {
      px.push_back(e->pixel_values);
      labels.push_back(e->class_label);
    }
    out.pixel_values = at::stack(px);
    out.labels = at::tensor(labels, at::kLong);
    out.num_items = static_cast<int64_t>(xs.size());
    if (!xs.front()->input_ids.empty()) {
      // Image-text pairs (CLIP): the texts right-padded; image i belongs to text i.
      size_t len = 0;
      for (const auto* e : xs) len = std::max(len, e->input_ids.size());
      const auto b = static_cast<int64_t>(xs.size()), s = static_cast<int64_t>(len);
      out.input_ids = at::full({b, s}, pad_id, at::kLong);
      out.attention_mask = at::zeros({b, s}, at::kLong);
      for (int64_t i = 0; i < b; ++i) {
        const auto& ids = xs[i]->input_ids;
        const auto n = static_cast<int64_t>(ids.size());
        out.input_ids[i].narrow(0, 0, n).copy_(at::tensor(ids, at::kLong));
        out.attention_mask[i].narrow(0, 0, n).fill_(1);
      }
      out.labels = at::arange(b, at::kLong);
    }
    return out;
  }
  if (!xs.empty() && xs.front()->seq2seq) return collate_seq2seq(xs, pad_id);
  if (causal && flatten && !xs.empty() && xs.front()->task_id >= 0)
    throw std::runtime_error("padding_free puts a batch's examples in one row; \"task_ids\" need one per row");
  const bool positions =
      causal && (flatten || std::any_of(xs.begin(), xs.end(), [](const Example* e) { return !e->position_ids.empty(); }));
  std::vector<Example> flat;
  std::vector<const Example*> rows = xs;
  if (causal && flatten) {
    flat.emplace_back();
    for (const auto* e : xs) append_example(flat.back(), *e);
    rows = {&flat.back()};
  }
  size_t len = 0;
  for (const auto* e : rows) len = std::max(len, e->input_ids.size());
  const auto b = static_cast<int64_t>(rows.size()), s = static_cast<int64_t>(len);
  // Token classification: labels per token like an LM's, without the shift.
  const bool per_token = causal || std::any_of(rows.begin(), rows.end(), [](const Example* e) { return !e->labels.empty(); });
  std::vector<int64_t> ids(b * s, pad_id), mask(b * s, 0), labels(per_token ? b * s : b, -100), pos;
  if (positions) pos.assign(b * s, 0);
  Batch out;
  for (int64_t i = 0; i < b; ++i) {
    const auto& e = *rows[i];
    const int64_t n = static_cast<int64_t>(e.input_ids.size());
    for (int64_t t = 0; t < n; ++t) {
      ids[i * s + t] = e.input_ids[t];
      mask[i * s + t] = 1;
      if (per_token) {
        labels[i * s + t] = e.labels[t];
        // A causal LM's position 0 never has a prediction.
        if ((t > 0 || !causal) && e.labels[t] != -100) ++out.num_items;
      }
    }
    // Padding counts from 0 again: a sequence of its own, which no real token sees.
    if (positions)
      for (int64_t t = 0; t < s; ++t)
        pos[i * s + t] = t < n ? (e.position_ids.empty() ? t : e.position_ids[t]) : t - n;
    if (!per_token) labels[i] = e.class_label;
  }
  if (!per_token) out.num_items = b;
  if (!per_token && !rows.empty() && !rows.front()->targets.empty()) {  // regression / multi-label
    std::vector<float> targets;
    for (const auto* e : rows) targets.insert(targets.end(), e->targets.begin(), e->targets.end());
    out.targets = at::tensor(targets, at::kFloat).view({b, -1});
  }
  out.input_ids = at::tensor(ids, at::kLong).view({b, s});
  out.attention_mask = at::tensor(mask, at::kLong).view({b, s});
  out.labels = per_token ? at::tensor(labels, at::kLong).view({b, s}) : at::tensor(labels, at::kLong);
  if (positions) out.position_ids = at::tensor(pos, at::kLong).view({b, s});
  out.task_ids = task_ids_of(xs);
  if (causal && !flatten && !rows.empty() && !rows.front()->input_type_mask.empty()) {
    std::vector<int64_t> types(b * s, 0);
    for (int64_t i = 0; i < b; ++i)
      std::copy(rows[i]->input_type_mask.begin(), rows[i]->input_type_mask.end(), types.begin() + i * s);
    out.input_type_mask = at::tensor(types, at::kLong).view({b, s});
  }
  return out;
}

}  // namespace peft
