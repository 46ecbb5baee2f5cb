// Reading JSON from untrusted files and strings: a regular file only, a bounded nesting
// depth (deeply nested input would overflow the stack in later recursive use), and
// errors that name the file and say what is wrong in one line.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace peft {

constexpr int kMaxJsonDepth = 256;

nlohmann::json read_json_file(const std::string& path);
nlohmann::ordered_json read_ordered_json_file(const std::string& path);
// `where` names the source in errors (a file, "line 3 of data.jsonl", "--method").
nlohmann::json parse_json(std::string_view text, const std::string& where);
nlohmann::ordered_json parse_ordered_json(std::string_view text, const std::string& where);
// A file's bytes; throws naming it (missing, not a regular file, unreadable).
std::string read_file_bytes(const std::string& path);

// A value quoted for an error message: short, and valid UTF-8 whatever it holds.
std::string quote_json(const nlohmann::json& v, size_t max_chars = 60);
std::string quote_json(const nlohmann::ordered_json& v, size_t max_chars = 60);

// `v` as T, taken as written: nlohmann would turn 4.7 into 4, true into 1 and 1e300
// into garbage. Throws "<what> must be <kind>, got <value>".
template <class T, class Json>
T strict_get(const Json& v, const std::string& what) {
  auto wrong = [&](const char* kind) -> T {
    throw std::runtime_error(what + " must be " + kind + ", got " + quote_json(v));
  };
  if constexpr (std::is_same_v<T, bool>) {
    if (!v.is_boolean()) return wrong("true or false");
  } else if constexpr (std::is_integral_v<T>) {
    if (!v.is_number_integer()) return wrong("an integer");
    if (std::is_signed_v<T> && v.is_number_unsigned() && v.template get<uint64_t>() > uint64_t(INT64_MAX))
      return wrong("an integer below 2^63");
    if (std::is_unsigned_v<T> && !v.is_number_unsigned() && v.template get<int64_t>() < 0)
      return wrong("an integer >= 0");
  } else if constexpr (std::is_floating_point_v<T>) {
    if (!v.is_number()) return wrong("a number");
  } else if constexpr (std::is_same_v<T, std::string>) {
    if (!v.is_string()) return wrong("a string");
  }
  try {
    return v.template get<T>();
  } catch (const std::exception&) {
    return wrong("of another type");
  }
}

}  // namespace peft
