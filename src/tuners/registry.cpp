// peft_type -> config parser (each method registers itself; tuners/registry.h), and what
// AdapterConfig does by default.
#include <algorithm>
#include <functional>
#include <map>
#include <stdexcept>

#include "peft/tuner.h"
#include "tuners/registry.h"
#include "util/suggest.h"

namespace peft {

namespace {

std::map<std::string, ConfigParser>& parsers() {
  static std::map<std::string, ConfigParser> m;  // filled by the methods' registrations
  return m;
}

}  // namespace

NamedModules AdapterConfig::layer_targets(Model&) const { return {}; }

std::shared_ptr<LayerAdapter> AdapterConfig::make_layer_adapter(const std::string& path, Module&, at::Generator&) const {
  throw std::logic_error(peft_type() + " attaches no layer adapters (asked for '" + path + "')");
}

std::unique_ptr<AdapterConfig> parse_adapter_config(const nlohmann::ordered_json& j, const std::string& where,
                                                    std::vector<std::string>* unknown) {
  if (!j.is_object()) throw std::runtime_error(where + ": not a JSON object");
  if (!j.contains("peft_type") || !j["peft_type"].is_string())
    throw std::runtime_error(where + ": 'peft_type' must be a string such as \"LORA\"");
  const std::string type = j["peft_type"].get<std::string>();
  auto it = parsers().find(type);
  if (it == parsers().end()) {
    std::string known;
    for (const auto& t : supported_peft_types()) known += (known.empty() ? "" : ", ") + t;
    throw std::runtime_error(where + ": unknown or unsupported peft_type '" + type + "'" +
                             did_you_mean(type, supported_peft_types()) + " (supported: " + known + ")");
  }
  return it->second(j, where, unknown);
}

std::unique_ptr<AdapterConfig> parse_user_adapter_config(const nlohmann::ordered_json& j, const std::string& where) {
  std::vector<std::string> unknown;
  auto c = parse_adapter_config(j, where, &unknown);
  if (unknown.empty()) return c;
  std::vector<std::string> known;
  const auto fields = c->to_json();  // bound: items() of a temporary would dangle
  for (const auto& [k, _] : fields.items())
    if (std::find(unknown.begin(), unknown.end(), k) == unknown.end()) known.push_back(k);
  throw std::runtime_error(where + ": unknown " + c->peft_type() + " setting '" + unknown.front() + "'" +
                           did_you_mean(unknown.front(), known) + " (docs/TUNERS.md lists each method's settings)");
}

bool register_adapter_config(const std::string& peft_type, ConfigParser parse) {
  if (!parsers().emplace(peft_type, std::move(parse)).second)
    throw std::logic_error("peft_type " + peft_type + " is registered twice");
  return true;
}

std::vector<std::string> supported_peft_types() {
  std::vector<std::string> out;
  for (const auto& [t, _] : parsers()) out.push_back(t);
  return out;
}

}  // namespace peft
