#include "tuners/config_fields.h"

#include <stdexcept>

namespace peft {

ConfigFields::ConfigFields(const ojson& j, const ojson& defaults, const std::string& peft_type, std::string where,
                           std::vector<std::string>* unknown, AdapterConfig& c)
    : j_(j), defaults_(defaults), where_(std::move(where)) {
  if (!j.is_object()) fail("not a JSON object");
  const std::string type = j.contains("peft_type") && j["peft_type"].is_string() ? j["peft_type"].get<std::string>() : "";
  if (type != peft_type) fail("peft_type is '" + type + "', expected '" + peft_type + "'");
  for (const auto& [k, _] : j.items())
    if (!defaults.contains(k) && unknown) unknown->push_back(k);
  c.source = j;
  read_list_or_regex(value("target_modules"), &c.targets.target_list, &c.targets.target_regex, "target_modules",
                     where_);
  read_list_or_regex(value("exclude_modules"), &c.targets.exclude_list, &c.targets.exclude_regex, "exclude_modules",
                     where_);
  const auto& lt = value("layers_to_transform");
  if (lt.is_array()) {
    for (const auto& e : lt) c.targets.layers_to_transform.push_back(strict_get<int64_t>(e, where_ + ": 'layers_to_transform' entries"));
  } else if (!lt.is_null()) {
    c.targets.layers_to_transform = {strict_get<int64_t>(lt, where_ + ": 'layers_to_transform'")};
  }
  for (int64_t l : c.targets.layers_to_transform)
    if (l < 0) fail("'layers_to_transform' entries must be layer indices >= 0, got " + std::to_string(l));
  c.targets.layers_pattern = string_list(value("layers_pattern"), "layers_pattern");
  c.targets.modules_to_save = string_list(value("modules_to_save"), "modules_to_save");
  for (const char* key : {"task_type", "base_model_name_or_path"})
    if (!value(key).is_null() && !value(key).is_string()) fail("'" + std::string(key) + "' must be a string or null");
  if (value("task_type").is_string()) c.task_type = value("task_type").get<std::string>();
  if (value("base_model_name_or_path").is_string())
    c.base_model_name_or_path = value("base_model_name_or_path").get<std::string>();
  if (!value("inference_mode").is_null()) c.inference_mode = get<bool>("inference_mode");
}

std::vector<std::string> ConfigFields::string_list(const ojson& v, const char* key) const {
  if (v.is_null()) return {};
  if (v.is_string()) return {v.get<std::string>()};
  if (!v.is_array()) fail("'" + std::string(key) + "' must be a name or a list of names, got " + quote_json(v));
  std::vector<std::string> out;
  for (const auto& e : v) out.push_back(strict_get<std::string>(e, where_ + ": '" + key + "' entries"));
  return out;
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
  fail("'" + std::string(key) + "' = " + quote_json(*it) + " is not supported");
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
