#include "train/token_data.h"

#include <map>
#include <stdexcept>

#include "util/json_file.h"  // quote_json

namespace peft {

namespace {

const char* tags_key(const nlohmann::json& j) { return j.contains("tags") ? "tags" : "ner_tags"; }

// "O, B-PER, I-PER": label2id's names in id order, for error messages.
std::string known_labels(const nlohmann::json& label2id) {
  std::map<int64_t, std::string> by_id;
  for (const auto& [name, id] : label2id.items())
    if (id.is_number_integer()) by_id[id.get<int64_t>()] = name;
  std::string out;
  for (const auto& [_, name] : by_id) out += (out.empty() ? "" : ", ") + name;
  return out.empty() ? "none" : out;
}

int64_t tag_id(const nlohmann::json& tag, size_t word, const DataOptions& o) {
  int64_t id = -1;
  if (tag.is_number_integer()) {
    id = tag.get<int64_t>();
  } else if (tag.is_string()) {
    const auto& name = tag.get_ref<const std::string&>();
    if (!o.label2id.contains(name) || !o.label2id[name].is_number_integer())
      throw std::runtime_error("tag '" + name + "' of word " + std::to_string(word) +
                               " is not a label in config.json's label2id (" + known_labels(o.label2id) + ")");
    id = o.label2id[name].get<int64_t>();
  } else {
    throw std::runtime_error("tag " + quote_json(tag) + " of word " + std::to_string(word) +
                             " is neither a label name nor an index");
  }
  if (id < 0 || (o.num_labels > 0 && id >= o.num_labels))
    throw std::runtime_error("tag " + std::to_string(id) + " of word " + std::to_string(word) +
                             " is out of range: the model has " + std::to_string(o.num_labels) + " labels");
  return id;
}

// run_ner.py's b_to_i_label: the I- label of a B- label where the labels have one.
int64_t inside_label(int64_t id, const nlohmann::json& label2id) {
  for (const auto& [name, v] : label2id.items())
    if (v.is_number_integer() && v.get<int64_t>() == id && name.rfind("B-", 0) == 0) {
      const std::string inside = "I-" + name.substr(2);
      if (label2id.contains(inside) && label2id[inside].is_number_integer()) return label2id[inside].get<int64_t>();
    }
  return id;
}

}  // namespace

bool is_token_tags_line(const nlohmann::json& j) {
  return j.is_object() && j.contains("tokens") && (j.contains("tags") || j.contains("ner_tags"));
}

Example token_tags_example(const nlohmann::json& j, const DataOptions& o) {
  if (!is_token_tags_line(j)) throw std::runtime_error("token classification needs {\"tokens\", \"tags\"} lines");
  if (!o.tokenizer) throw std::runtime_error("format 'token_tags' needs a tokenizer");
  const auto& words = j.at("tokens");
  const auto& tags = j.at(tags_key(j));
  if (!words.is_array() || !tags.is_array()) throw std::runtime_error("'tokens' and 'tags' must be lists");
  if (words.size() != tags.size())
    throw std::runtime_error(std::to_string(words.size()) + " tokens but " + std::to_string(tags.size()) + " tags");
  std::vector<std::string> ws;
  std::vector<int64_t> word_labels;
  for (size_t w = 0; w < words.size(); ++w) {
    if (!words[w].is_string()) throw std::runtime_error("token " + std::to_string(w) + " is not a string");
    ws.push_back(words[w].get<std::string>());
    word_labels.push_back(tag_id(tags[w], w, o));
  }
  std::vector<int64_t> word_ids;
  Example ex;
  ex.input_ids = o.tokenizer->encode_words(ws, true, &word_ids).ids;
  ex.labels.assign(ex.input_ids.size(), -100);
  int64_t previous = -1;
  for (size_t i = 0; i < word_ids.size(); ++i) {
    const int64_t w = word_ids[i];
    if (w < 0) {
      previous = w;
      continue;
    }
    if (w != previous) ex.labels[i] = word_labels[w];
    else if (o.label_all_tokens) ex.labels[i] = inside_label(word_labels[w], o.label2id);
    previous = w;
  }
  return ex;
}

std::vector<std::string> label_names(const nlohmann::json& config, int64_t num_labels) {
  std::vector<std::string> out(static_cast<size_t>(std::max<int64_t>(0, num_labels)));
  for (int64_t i = 0; i < num_labels; ++i) out[i] = "LABEL_" + std::to_string(i);
  if (config.contains("id2label") && config["id2label"].is_object()) {
    for (const auto& [key, name] : config["id2label"].items()) {
      if (!name.is_string()) continue;
      try {
        const int64_t i = std::stoll(key);
        if (i >= 0 && i < num_labels) out[i] = name.get<std::string>();
      } catch (const std::exception&) {
      }
    }
  } else if (config.contains("label2id") && config["label2id"].is_object()) {
    for (const auto& [name, id] : config["label2id"].items())
      if (id.is_number_integer() && id.get<int64_t>() >= 0 && id.get<int64_t>() < num_labels) out[id.get<int64_t>()] = name;
  }
  return out;
}

}  // namespace peft
