// Typed reads from a config.json, with errors that name the file and key. Every value
// that sizes or divides something is read through dim(): an integer in [1, max], so a
// hostile or mistyped config fails here, before any module is built.
#pragma once

#include <cmath>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "util/json_file.h"

namespace peft {

// Upper bounds far above any real model, low enough that no size computed from them
// overflows or asks for an absurd allocation.
struct ConfigLimits {
  static constexpr int64_t kLayers = 4096;
  static constexpr int64_t kWidth = int64_t{1} << 20;      // hidden, intermediate, head_dim
  static constexpr int64_t kHeads = 16384;
  static constexpr int64_t kVocab = int64_t{1} << 24;
  static constexpr int64_t kPositions = int64_t{1} << 24;
  static constexpr int64_t kLabels = int64_t{1} << 20;
};

class ConfigReader {
 public:
  ConfigReader(const nlohmann::json& j, std::string where) : j_(j), where_(std::move(where)) {}

  template <class T>
  T get(const char* key) const {
    auto it = j_.find(key);
    if (it == j_.end() || it->is_null()) fail("missing required key '" + std::string(key) + "'");
    return convert<T>(*it, key);
  }
  template <class T>
  T get(const char* key, T fallback) const {
    auto it = j_.find(key);
    return it == j_.end() || it->is_null() ? fallback : convert<T>(*it, key);
  }
  // A size: an integer in [1, max] (missing: `fallback`, or an error when none).
  int64_t dim(const char* key, std::optional<int64_t> fallback, int64_t max) const {
    const int64_t v = fallback && !has(key) ? *fallback : get<int64_t>(key);
    if (v < 1 || v > max)
      fail(std::string("'") + key + "' must be between 1 and " + std::to_string(max) + ", got " + std::to_string(v));
    return v;
  }
  // A finite number > 0 (epsilons, rope theta).
  double positive(const char* key, double fallback) const {
    const double v = get<double>(key, fallback);
    if (!std::isfinite(v) || v <= 0) fail("'" + std::string(key) + "' must be a finite number > 0");
    return v;
  }
  bool has(const char* key) const {
    auto it = j_.find(key);
    return it != j_.end() && !it->is_null();
  }
  const nlohmann::json& json() const { return j_; }
  const std::string& where() const { return where_; }
  [[noreturn]] void fail(const std::string& msg) const { throw std::runtime_error(where_ + ": " + msg); }

 private:
  template <class T>
  T convert(const nlohmann::json& v, const char* key) const {
    return strict_get<T>(v, where_ + ": '" + key + "'");
  }
  const nlohmann::json& j_;
  std::string where_;
};

// transformers 5's rope_parameters (older files: rope_scaling), with what it lacks taken
// from the top-level keys of older configs: rope_theta from `theta_key` (default `theta`)
// and, for families with partial rotary, partial_rotary_factor from `partial_key` (default
// `partial`).
inline nlohmann::json read_rope_parameters(const ConfigReader& r, const char* theta_key, double theta,
                                           const char* partial_key = nullptr, double partial = 1.0) {
  const char* key = r.has("rope_parameters") ? "rope_parameters" : "rope_scaling";
  nlohmann::json rope = r.has(key) ? r.json()[key] : nlohmann::json::object();
  if (!rope.is_object()) r.fail(std::string("'") + key + "' must be an object");
  if (!rope.contains("rope_theta")) rope["rope_theta"] = r.positive(theta_key, theta);
  if (partial_key && !rope.contains("partial_rotary_factor"))
    rope["partial_rotary_factor"] = r.positive(partial_key, partial);
  return rope;
}

// transformers' layer_types, per layer: true = "sliding_attention" (a local window), false =
// "full_attention". `fallback(i)` is the family's rule when config.json lists none.
inline std::vector<bool> read_sliding_layers(const ConfigReader& r, int64_t num_layers,
                                             const std::function<bool(int64_t)>& fallback) {
  std::vector<bool> sliding(static_cast<size_t>(num_layers));
  if (!r.has("layer_types")) {
    for (int64_t i = 0; i < num_layers; ++i) sliding[static_cast<size_t>(i)] = fallback(i);
    return sliding;
  }
  const auto& t = r.json()["layer_types"];
  if (!t.is_array() || static_cast<int64_t>(t.size()) != num_layers)
    r.fail("'layer_types' must list one type per layer (" + std::to_string(num_layers) + ")");
  for (size_t i = 0; i < t.size(); ++i) {
    const std::string type = t[i].is_string() ? t[i].get<std::string>() : t[i].dump();
    if (type != "full_attention" && type != "sliding_attention")
      r.fail("layer_types[" + std::to_string(i) + "] '" + type +
             "' is not supported (supported: full_attention, sliding_attention)");
    sliding[i] = type == "sliding_attention";
  }
  return sliding;
}

}  // namespace peft
