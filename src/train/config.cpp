#include <set>
#include <stdexcept>

#include "peft/train.h"

namespace peft {

namespace {

// Every field with its JSON name, once: parsing, printing and overrides share this list.
template <class C, class F>
void for_each_field(C& c, F&& f) {
  f("model", c.model);
  f("tokenizer", c.tokenizer);
  f("architecture", c.architecture);
  f("num_labels", c.num_labels);
  f("method", c.method);
  f("init_adapter", c.init_adapter);
  f("output_dir", c.output_dir);
  f("train_file", c.train_file);
  f("label_file", c.label_file);
  f("eval_file", c.eval_file);
  f("eval_label_file", c.eval_label_file);
  f("eval_split", c.eval_split);
  f("format", c.format);
  f("max_length", c.max_length);
  f("packing", c.packing);
  f("completion_only_loss", c.completion_only_loss);
  f("on_bad_line", c.on_bad_line);
  f("shuffle", c.shuffle);
  f("learning_rate", c.learning_rate);
  f("weight_decay", c.weight_decay);
  f("adam_beta1", c.adam_beta1);
  f("adam_beta2", c.adam_beta2);
  f("adam_epsilon", c.adam_epsilon);
  f("lr_scheduler_type", c.lr_scheduler_type);
  f("warmup_steps", c.warmup_steps);
  f("warmup_ratio", c.warmup_ratio);
  f("per_device_train_batch_size", c.per_device_train_batch_size);
  f("per_device_eval_batch_size", c.per_device_eval_batch_size);
  f("gradient_accumulation_steps", c.gradient_accumulation_steps);
  f("max_grad_norm", c.max_grad_norm);
  f("max_steps", c.max_steps);
  f("num_train_epochs", c.num_train_epochs);
  f("precision", c.precision);
  f("gradient_checkpointing", c.gradient_checkpointing);
  f("device", c.device);
  f("logging_steps", c.logging_steps);
  f("eval_steps", c.eval_steps);
  f("save_steps", c.save_steps);
  f("save_total_limit", c.save_total_limit);
  f("early_stopping_patience", c.early_stopping_patience);
  f("seed", c.seed);
  f("progress", c.progress);
}

template <class T>
void assign(T& dst, const nlohmann::json& v, const std::string& where, const std::string& key) {
  try {
    if constexpr (std::is_same_v<T, nlohmann::ordered_json>) dst = nlohmann::ordered_json::parse(v.dump());
    else dst = v.get<T>();
  } catch (const nlohmann::json::exception&) {
    throw std::runtime_error(where + ": '" + key + "' has the wrong type (" + v.dump() + ")");
  }
}

void validate(const TrainConfig& c, const std::string& where) {
  auto bad = [&](const std::string& m) { throw std::runtime_error(where + ": " + m); };
  if (c.model.empty()) bad("'model' is required");
  if (c.train_file.empty()) bad("'train_file' is required");
  static const std::set<std::string> formats = {"auto", "input_ids", "text", "prompt_completion", "messages", "text_label"};
  if (!formats.count(c.format)) bad("unknown format '" + c.format + "'");
  static const std::set<std::string> scheds = {"constant", "constant_with_warmup", "linear", "cosine"};
  if (!scheds.count(c.lr_scheduler_type)) bad("unknown lr_scheduler_type '" + c.lr_scheduler_type + "'");
  if (c.on_bad_line != "stop" && c.on_bad_line != "skip") bad("on_bad_line must be stop or skip");
  if (c.precision != "fp32" && c.precision != "bf16") bad("precision must be fp32 or bf16");
  if (c.per_device_train_batch_size < 1 || c.gradient_accumulation_steps < 1) bad("batch sizes must be >= 1");
  if (c.eval_split < 0 || c.eval_split >= 1) bad("eval_split must be in [0, 1)");
  if (c.max_length < 2) bad("max_length must be >= 2");
}

}  // namespace

TrainConfig TrainConfig::from_json(const nlohmann::json& j, const std::string& where) {
  if (!j.is_object()) throw std::runtime_error(where + ": the config must be a JSON object");
  TrainConfig c;
  std::set<std::string> known;
  for_each_field(c, [&](const char* name, auto& field) {
    known.insert(name);
    if (auto it = j.find(name); it != j.end() && !it->is_null()) assign(field, *it, where, name);
  });
  for (const auto& [k, _] : j.items())
    if (!known.count(k)) throw std::runtime_error(where + ": unknown key '" + k + "' (docs/TRAINING.md lists the keys)");
  validate(c, where);
  return c;
}

nlohmann::json TrainConfig::to_json() const {
  nlohmann::json j;
  for_each_field(*this, [&](const char* name, const auto& field) { j[name] = field; });
  return j;
}

nlohmann::json TrainConfig::with_overrides(nlohmann::json j, const std::vector<std::string>& kv) {
  if (j.is_null()) j = nlohmann::json::object();
  for (const auto& s : kv) {
    auto eq = s.find('=');
    if (eq == std::string::npos) throw std::runtime_error("override '" + s + "' is not key=value");
    const std::string key = s.substr(0, eq), value = s.substr(eq + 1);
    nlohmann::json v;
    try {
      v = nlohmann::json::parse(value);
    } catch (const nlohmann::json::exception&) {
      v = value;
    }
    if (key.rfind("method.", 0) == 0) j["method"][key.substr(7)] = v;
    else j[key] = v;
  }
  return j;
}

}  // namespace peft
