#include <algorithm>
#include <cmath>
#include <limits>
#include <set>
#include <stdexcept>

#include "peft/train.h"
#include "models/config_reader.h"
#include "util/json_file.h"
#include "util/suggest.h"

namespace peft {

namespace {

std::string format_number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

// Every field with its JSON name, once: parsing, printing and overrides share this list.
template <class C, class F>
void for_each_field(C& c, F&& f) {
  f("model", c.model);
  f("tokenizer", c.tokenizer);
  f("architecture", c.architecture);
  f("num_labels", c.num_labels);
  f("labels", c.labels);
  f("method", c.method);
  f("init_adapter", c.init_adapter);
  f("init_kv_prefix_text", c.init_kv_prefix_text);
  f("composition", c.composition);
  f("output_dir", c.output_dir);
  f("train_file", c.train_file);
  f("label_file", c.label_file);
  f("eval_file", c.eval_file);
  f("eval_label_file", c.eval_label_file);
  f("eval_split", c.eval_split);
  f("format", c.format);
  f("max_length", c.max_length);
  f("packing", c.packing);
  f("padding_free", c.padding_free);
  f("completion_only_loss", c.completion_only_loss);
  f("chat_loss_turns", c.chat_loss_turns);
  f("label_all_tokens", c.label_all_tokens);
  f("on_bad_line", c.on_bad_line);
  f("shuffle", c.shuffle);
  f("learning_rate", c.learning_rate);
  f("weight_decay", c.weight_decay);
  f("adam_beta1", c.adam_beta1);
  f("adam_beta2", c.adam_beta2);
  f("adam_epsilon", c.adam_epsilon);
  f("lr_scheduler_type", c.lr_scheduler_type);
  f("optim", c.optim);
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
  f("gradient_checkpointing_every", c.gradient_checkpointing_every);
  f("gradient_checkpointing_offload", c.gradient_checkpointing_offload);
  f("ddp_bucket_cap_mb", c.ddp_bucket_cap_mb);
  f("device", c.device);
  f("load_in_4bit", c.load_in_4bit);
  f("quant_type", c.quant_type);
  f("double_quant", c.double_quant);
  f("blocksize", c.blocksize);
  f("compute_dtype", c.compute_dtype);
  f("llm_int8_skip_modules", c.llm_int8_skip_modules);
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
  if constexpr (std::is_same_v<T, nlohmann::ordered_json>) {
    if (!v.is_object()) throw std::runtime_error(where + ": '" + key + "' must be an object, got " + quote_json(v));
    dst = nlohmann::ordered_json::parse(v.dump());
  } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
    if (!v.is_array()) throw std::runtime_error(where + ": '" + key + "' must be a list of names, got " + quote_json(v));
    dst.clear();
    for (const auto& e : v) dst.push_back(strict_get<std::string>(e, where + ": '" + key + "' entries"));
  } else {
    dst = strict_get<T>(v, where + ": '" + key + "'");
  }
}

}  // namespace

void TrainConfig::validate(const std::string& where) const {
  const TrainConfig& c = *this;
  auto bad = [&](const std::string& m) { throw std::runtime_error(where + ": " + m); };
  auto in_range = [&](const char* key, double v, double lo, double hi, bool lo_open = false) {
    if (!std::isfinite(v) || v < lo || v > hi || (lo_open && v == lo))
      bad("'" + std::string(key) + "' must be in " + (lo_open ? "(" : "[") + format_number(lo) + ", " +
          format_number(hi) + "], got " + format_number(v));
  };
  constexpr int64_t kMaxBatch = int64_t{1} << 20, kMaxSteps = int64_t{1} << 40;
  if (c.model.empty()) bad("'model' is required");
  if (c.train_file.empty()) bad("'train_file' is required");
  if (c.output_dir.empty()) bad("'output_dir' must not be empty");
  static const std::vector<std::string> formats = {"auto", "input_ids", "text", "prompt_completion", "messages",
                                                   "text_label", "token_tags", "input_target"};
  if (std::find(formats.begin(), formats.end(), c.format) == formats.end())
    bad("unknown format '" + c.format + "'" + did_you_mean(c.format, formats));
  static const std::vector<std::string> scheds = {"constant", "constant_with_warmup", "linear", "cosine"};
  if (std::find(scheds.begin(), scheds.end(), c.lr_scheduler_type) == scheds.end())
    bad("unknown lr_scheduler_type '" + c.lr_scheduler_type + "'" + did_you_mean(c.lr_scheduler_type, scheds));
  static const std::vector<std::string> optims = {"auto", "adamw_torch", "adamw_torch_fused"};
  if (std::find(optims.begin(), optims.end(), c.optim) == optims.end())
    bad("unknown optim '" + c.optim + "'" + did_you_mean(c.optim, optims));
  if (c.on_bad_line != "stop" && c.on_bad_line != "skip") bad("on_bad_line must be stop or skip");
  if (c.chat_loss_turns != "all" && c.chat_loss_turns != "last") bad("chat_loss_turns must be all or last");
  if (c.precision != "fp32" && c.precision != "bf16") bad("precision must be fp32 or bf16");
  if (c.quant_type != "nf4" && c.quant_type != "fp4") bad("quant_type must be nf4 or fp4");
  if (c.blocksize < 32 || c.blocksize > 4096 || (c.blocksize & (c.blocksize - 1)) != 0)
    bad("blocksize must be a power of two in 32..4096, got " + std::to_string(c.blocksize));
  if (!c.compute_dtype.empty() && c.compute_dtype != "float32" && c.compute_dtype != "bfloat16")
    bad("compute_dtype must be float32 or bfloat16");
  in_range("per_device_train_batch_size", c.per_device_train_batch_size, 1, kMaxBatch);
  in_range("per_device_eval_batch_size", c.per_device_eval_batch_size, 1, kMaxBatch);
  in_range("gradient_accumulation_steps", c.gradient_accumulation_steps, 1, kMaxBatch);
  in_range("eval_split", c.eval_split, 0, 0.999);
  in_range("gradient_checkpointing_every", c.gradient_checkpointing_every, 1, kMaxBatch);
  if (!c.gradient_checkpointing && (c.gradient_checkpointing_every != 1 || c.gradient_checkpointing_offload))
    bad(std::string(c.gradient_checkpointing_offload ? "gradient_checkpointing_offload" : "gradient_checkpointing_every") +
        " needs gradient_checkpointing=true");
  if (c.gradient_checkpointing_offload && c.device.rfind("cpu", 0) == 0)
    bad("gradient_checkpointing_offload moves activations from a GPU to host memory; on device cpu they are there "
        "already");
  in_range("max_length", c.max_length, 2, int64_t{1} << 24);
  in_range("learning_rate", c.learning_rate, 0, std::numeric_limits<double>::max());
  in_range("weight_decay", c.weight_decay, 0, 10);
  in_range("adam_beta1", c.adam_beta1, 0, 1);
  in_range("adam_beta2", c.adam_beta2, 0, 1);
  if (c.adam_beta1 >= 1 || c.adam_beta2 >= 1) bad("adam_beta1 and adam_beta2 must be below 1");
  in_range("adam_epsilon", c.adam_epsilon, 0, 1, /*lo_open=*/true);
  in_range("max_grad_norm", c.max_grad_norm, 0, 1e9);
  in_range("ddp_bucket_cap_mb", c.ddp_bucket_cap_mb, 0, 65536, /*lo_open=*/true);
  if (c.max_steps != -1) in_range("max_steps", c.max_steps, 1, kMaxSteps);
  in_range("num_train_epochs", c.num_train_epochs, 0, 1e6, /*lo_open=*/true);
  in_range("warmup_steps", c.warmup_steps, 0, kMaxSteps);
  in_range("warmup_ratio", c.warmup_ratio, 0, 1);
  in_range("logging_steps", c.logging_steps, 1, kMaxSteps);
  in_range("eval_steps", c.eval_steps, 0, kMaxSteps);
  in_range("save_steps", c.save_steps, 0, kMaxSteps);
  in_range("save_total_limit", c.save_total_limit, 0, 1e6);
  in_range("early_stopping_patience", c.early_stopping_patience, 0, 1e6);
  in_range("num_labels", c.num_labels, 0, ConfigLimits::kLabels);
  if (c.num_labels > 0 && c.architecture.empty()) bad("'num_labels' needs 'architecture' (the class of the new head)");
  if (!c.labels.empty() && c.num_labels > 0 && c.num_labels != static_cast<int64_t>(c.labels.size()))
    bad("'num_labels' " + std::to_string(c.num_labels) + " and the " + std::to_string(c.labels.size()) +
        " 'labels' disagree");
  if (c.labels.size() > static_cast<size_t>(ConfigLimits::kLabels)) bad("too many 'labels'");
  std::set<std::string> seen;
  for (const auto& l : c.labels)
    if (!seen.insert(l).second) bad("'labels' names '" + l + "' twice");
}

TrainConfig TrainConfig::from_json(const nlohmann::json& j, const std::string& where) {
  if (!j.is_object()) throw std::runtime_error(where + ": the config must be a JSON object");
  TrainConfig c;
  std::set<std::string> known;
  for_each_field(c, [&](const char* name, auto& field) {
    known.insert(name);
    if (auto it = j.find(name); it != j.end() && !it->is_null()) assign(field, *it, where, name);
  });
  for (const auto& [k, _] : j.items())
    if (!known.count(k)) {
      std::string hint = did_you_mean(k, {known.begin(), known.end()});
      if (k == "bf16" || k == "fp16") hint = " (use precision=bf16)";
      throw std::runtime_error(where + ": unknown key '" + k + "'" +
                               (hint.empty() ? " (peft train --help and docs/TRAINING.md list the keys)" : hint));
    }
  c.validate(where);
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
      v = parse_json(value, "");
    } catch (const std::exception&) {
      v = value;  // not JSON: a string
    }
    if (key.rfind("method.", 0) == 0) j["method"][key.substr(7)] = v;
    else j[key] = v;
  }
  return j;
}

}  // namespace peft
