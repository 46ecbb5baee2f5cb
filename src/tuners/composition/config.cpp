// CompositionConfig: the JSON object of docs/COMPOSITION.md (composition_config.json).
#include <cmath>
#include <set>
#include <stdexcept>

#include "peft/composition.h"
#include "util/json_file.h"

namespace peft {

namespace {

const std::set<std::string> kKinds = {"stack", "average", "fuse", "adapter_fusion"};
const std::set<std::string> kKeys = {"composition", "adapters", "weights", "trainable_weights", "temperature",
                                     "train_adapters"};

// An adapter name becomes a folder of a saved composition: no path tricks.
bool plain_name(const std::string& n) {
  return !n.empty() && n != "." && n != ".." && n.find('/') == std::string::npos &&
         n.find('\\') == std::string::npos && n.find('\0') == std::string::npos;
}

}  // namespace

CompositionConfig CompositionConfig::from_json(const nlohmann::ordered_json& j, const std::string& where) {
  auto fail = [&](const std::string& key, const std::string& why) -> void {
    throw std::invalid_argument(where + ": '" + key + "' " + why);
  };
  if (!j.is_object()) throw std::invalid_argument(where + ": a composition must be a JSON object");
  for (const auto& [k, _] : j.items())
    if (!kKeys.count(k)) fail(k, "is not a composition key (composition, adapters, weights, trainable_weights, "
                                 "temperature, train_adapters)");
  CompositionConfig c;
  if (!j.contains("composition")) fail("composition", "is missing (stack | average | fuse | adapter_fusion)");
  c.kind = strict_get<std::string>(j["composition"], where + ": 'composition'");
  if (!kKinds.count(c.kind))
    fail("composition", "is an unknown kind " + quote_json(j["composition"]) + " (stack | average | fuse | adapter_fusion)");
  if (!j.contains("adapters") || !j["adapters"].is_array() || j["adapters"].empty())
    fail("adapters", "must be a non-empty list of adapter names");
  std::set<std::string> seen;
  for (const auto& a : j["adapters"]) {
    auto name = strict_get<std::string>(a, where + ": 'adapters' entry");
    if (!plain_name(name)) fail("adapters", "has the name " + quote_json(a) + ", which cannot name a folder");
    if (!seen.insert(name).second) fail("adapters", "names '" + name + "' twice");
    c.adapters.push_back(name);
  }
  const size_t n = c.adapters.size();
  if (j.contains("weights")) {
    if (c.kind != "fuse") fail("weights", "is for composition 'fuse' (this is '" + c.kind + "')");
    if (!j["weights"].is_array() || j["weights"].size() != n)
      fail("weights", "must be a list of " + std::to_string(n) + " numbers, one per adapter, got " +
                          quote_json(j["weights"]));
    for (const auto& w : j["weights"]) {
      c.weights.push_back(strict_get<double>(w, where + ": 'weights' entry"));
      if (!std::isfinite(c.weights.back())) fail("weights", "must be finite numbers");
    }
  }
  if (c.weights.empty() && (c.kind == "fuse" || c.kind == "average")) c.weights.assign(n, 1.0 / static_cast<double>(n));
  if (j.contains("trainable_weights")) {
    c.trainable_weights = strict_get<bool>(j["trainable_weights"], where + ": 'trainable_weights'");
    if (c.trainable_weights && c.kind != "fuse" && c.kind != "average")
      fail("trainable_weights", "is for composition 'fuse' or 'average' (this is '" + c.kind + "')");
  }
  if (j.contains("temperature")) {
    if (c.kind != "adapter_fusion") fail("temperature", "is for composition 'adapter_fusion' (this is '" + c.kind + "')");
    c.temperature = strict_get<double>(j["temperature"], where + ": 'temperature'");
    if (!(c.temperature > 0) || !std::isfinite(c.temperature)) fail("temperature", "must be a positive number");
  }
  if (j.contains("train_adapters")) c.train_adapters = strict_get<bool>(j["train_adapters"], where + ": 'train_adapters'");
  return c;
}

nlohmann::ordered_json CompositionConfig::to_json() const {
  nlohmann::ordered_json j;
  j["composition"] = kind;
  j["adapters"] = adapters;
  if (kind == "fuse") j["weights"] = weights;
  if (kind == "fuse" || kind == "average") j["trainable_weights"] = trainable_weights;
  if (kind == "adapter_fusion") j["temperature"] = temperature;
  j["train_adapters"] = train_adapters;
  return j;
}

}  // namespace peft
