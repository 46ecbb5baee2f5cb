// Reading and writing adapter_config.json: a method's table of HF PEFT defaults, the
// fields every method shares, errors that name the file and key.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "peft/tuner.h"
#include "util/json_file.h"

namespace peft {

using ojson = nlohmann::ordered_json;

class ConfigFields {
 public:
  // Checks peft_type, lists keys missing from `defaults` in `unknown` and reads the shared
  // fields (targets, exclude, layers, modules_to_save, task_type, base model) into `c`.
  ConfigFields(const ojson& j, const ojson& defaults, const std::string& peft_type, std::string where,
               std::vector<std::string>* unknown, AdapterConfig& c);

  // The file's value, else the default; a wrong type is an error naming the key.
  template <class T>
  T get(const char* key) const {
    return strict_get<T>(value(key), where_ + ": '" + key + "'");
  }
  const ojson& value(const char* key) const;
  bool is_null(const char* key) const { return value(key).is_null(); }
  // Refuses a field whose value is not the default (a feature we do not implement).
  void require_default(const char* key) const;
  [[noreturn]] void fail(const std::string& msg) const;
  const std::string& where() const { return where_; }

 private:
  // A name or a list of names (layers_pattern, modules_to_save).
  std::vector<std::string> string_list(const ojson& v, const char* key) const;
  const ojson& j_;
  const ojson& defaults_;
  std::string where_;
};

// A target_modules-style value: a list of names or a regex string.
void read_list_or_regex(const ojson& v, std::optional<std::vector<std::string>>* list,
                        std::optional<std::string>* regex, const std::string& key, const std::string& where);
ojson list_or_regex(const std::optional<std::vector<std::string>>& list, const std::optional<std::string>& regex);

// `defaults`, then every key of c.source, then the shared fields and `peft_type`;
// `fields` (the method's own values) last. Keys sorted, as HF PEFT writes them.
ojson config_json(const AdapterConfig& c, const ojson& defaults, const ojson& fields);

// HF PEFT's per-architecture default target lists (by config.json "model_type"), e.g.
// TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING; throws naming the method when the
// model type has none and the config gave no targets.
std::vector<std::string> default_targets(const Model& model, const char* method,
                                         const std::vector<std::pair<std::string, std::vector<std::string>>>& table);

}  // namespace peft
