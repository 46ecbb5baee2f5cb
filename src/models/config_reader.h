// Typed reads from a config.json, with errors that name the file and key.
#pragma once

#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

namespace peft {

class ConfigReader {
 public:
  ConfigReader(const nlohmann::json& j, std::string where) : j_(j), where_(std::move(where)) {}

  template <class T>
  T get(const char* key) const {
    auto it = j_.find(key);
    if (it == j_.end() || it->is_null()) throw std::runtime_error(where_ + ": missing required key '" + key + "'");
    return convert<T>(*it, key);
  }
  template <class T>
  T get(const char* key, T fallback) const {
    auto it = j_.find(key);
    return it == j_.end() || it->is_null() ? fallback : convert<T>(*it, key);
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
    try {
      return v.get<T>();
    } catch (const nlohmann::json::exception&) {
      throw std::runtime_error(where_ + ": key '" + key + "' has the wrong type (" + v.dump() + ")");
    }
  }
  const nlohmann::json& j_;
  std::string where_;
};

}  // namespace peft
