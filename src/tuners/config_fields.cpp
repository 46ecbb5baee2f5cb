#include "tuners/config_fields.h"

#include <stdexcept>

namespace peft {

ConfigFields::ConfigFields(const ojson& j, const ojson& defaults, const std::string& peft_type, std::string where,
                           std::vector<std::string>* unknown, AdapterConfig& c)
    : j_(j), defaults_(defaults), where_(std::move(where)) {
  if (!j.is_object()) fail("not a JSON object");
  const std::string type = j.value("peft_type", std::string());
  if (type != peft_type) fail("peft_type is '" + type + "', expected '" + peft_type + "'");
  for (const auto& [k, _] : j.items())
    if (!defaults.contains(k) && unknown) unknown->push_back(k);
  c.source = j;
  try {
    read_list_or_regex(value("target_modules"), &c.targets.target_list, &c.targets.target_regex, "target_modules",
                       where_);
    read_list_or_regex(value("exclude_modules"), &c.targets.exclude_list, &c.targets.exclude_regex,
                       "exclude_modules", where_);
    const auto& lt = value("layers_to_transform");
    if (lt.is_number_integer()) c.targets.layers_to_transform = {lt.get<int64_t>()};
    else if (lt.is_array()) c.targets.layers_to_transform = lt.get<std::vector<int64_t>>();
    const auto& lp = value("layers_pattern");
    if (lp.is_string()) c.targets.layers_pattern = {lp.get<std::string>()};
    else if (lp.is_array()) c.targets.layers_pattern = lp.get<std::vector<std::string>>();
    const auto& ms = value("modules_to_save");
    if (ms.is_array()) c.targets.modules_to_save = ms.get<std::vector<std::string>>();
    if (value("task_type").is_string()) c.task_type = value("task_type").get<std::string>();
    if (value("base_model_name_or_path").is_string())
      c.base_model_name_or_path = value("base_model_name_or_path").get<std::string>();
    if (value("inference_mode").is_boolean()) c.inference_mode = value("inference_mode").get<bool>();
  } catch (const nlohmann::json::exception& e) {
    fail(std::string("a field has the wrong type: ") + e.what());
  }
}

const ojson& ConfigFields::value(const char* key) const {
  static const ojson null;
  if (auto it = j_.find(key); it != j_.end()) return *it;
  if (auto it = defaults_.find(key); it != defaults_.end()) return *it;
  return null;
}

void ConfigFields::require_default(const char* key) const {
  auto it = j_.find(key);
  if (it == j_.end() || it->is_null()) return;
  auto d = defaults_.find(key);
  if (d != defaults_.end() && *it == *d) return;
  fail("'" + std::string(key) + "' = " + it->dump() + " is not supported");
}

void ConfigFields::fail(const std::string& msg) const { throw std::runtime_error(where_ + ": " + msg); }

void read_list_or_regex(const ojson& v, std::optional<std::vector<std::string>>* list,
                        std::optional<std::string>* regex, const std::string& key, const std::string& where) {
  if (v.is_null()) return;
  if (v.is_string()) {
    *regex = v.get<std::string>();
  } else if (v.is_array()) {
    std::vector<std::string> out;
    for (const auto& e : v) {
      if (!e.is_string()) throw std::runtime_error(where + ": '" + key + "' entries must be strings");
      out.push_back(e.get<std::string>());
    }
    *list = out;
  } else {
    throw std::runtime_error(where + ": '" + key + "' must be a list of names or a regex string");
  }
}

ojson list_or_regex(const std::optional<std::vector<std::string>>& list, const std::optional<std::string>& regex) {
  if (regex) return *regex;
  if (list) return *list;
  return nullptr;
}

ojson config_json(const AdapterConfig& c, const ojson& defaults, const ojson& fields) {
  ojson j = defaults;
  for (const auto& [k, v] : c.source.items()) j[k] = v;
  const auto& t = c.targets;
  if (defaults.contains("target_modules")) j["target_modules"] = list_or_regex(t.target_list, t.target_regex);
  if (defaults.contains("exclude_modules")) j["exclude_modules"] = list_or_regex(t.exclude_list, t.exclude_regex);
  if (defaults.contains("layers_to_transform"))
    j["layers_to_transform"] = t.layers_to_transform.empty() ? ojson() : ojson(t.layers_to_transform);
  if (defaults.contains("layers_pattern"))
    j["layers_pattern"] = t.layers_pattern.empty()       ? ojson()
                          : t.layers_pattern.size() == 1 ? ojson(t.layers_pattern[0])
                                                         : ojson(t.layers_pattern);
  j["modules_to_save"] = t.modules_to_save.empty() ? ojson() : ojson(t.modules_to_save);
  j["task_type"] = c.task_type.empty() ? ojson() : ojson(c.task_type);
  j["base_model_name_or_path"] = c.base_model_name_or_path.empty() ? ojson() : ojson(c.base_model_name_or_path);
  j["peft_type"] = c.peft_type();
  j["inference_mode"] = true;
  for (const auto& [k, v] : fields.items()) j[k] = v;
  nlohmann::json sorted = j;  // std::map ordering: HF writes json.dumps(sort_keys=True)
  return ojson::parse(sorted.dump());
}

std::vector<std::string> default_targets(const Model& model, const char* method,
                                         const std::vector<std::pair<std::string, std::vector<std::string>>>& table) {
  const std::string type = model.config().value("model_type", std::string());
  for (const auto& [t, names] : table)
    if (t == type) return names;
  throw std::invalid_argument(std::string(method) + ": no default target_modules for model_type '" + type +
                              "'; set target_modules");
}

}  // namespace peft
