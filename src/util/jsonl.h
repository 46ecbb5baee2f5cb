// JSONL files of objects that name other files (images, audio): one loop for the readers.
#pragma once

#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

#include "util/json_file.h"

namespace peft {

// Calls fn(object, "line N of PATH") for every non-blank line; a line that is not JSON is
// an error naming it. The file must open.
inline void for_each_jsonl_line(const std::string& path,
                                const std::function<void(const nlohmann::json&, const std::string&)>& fn) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error(path + ": cannot open");
  std::string line;
  for (int64_t n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = "line " + std::to_string(n) + " of " + path;
    fn(parse_json(line, where), where);
  }
}

// True if the file's first non-blank line is a JSON object with `key`.
inline bool jsonl_first_object_has(const std::string& path, const std::string& key) {
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    try {
      const auto j = nlohmann::json::parse(line);
      return j.is_object() && j.contains(key);
    } catch (const std::exception&) {
      return false;  // the loader reports the line
    }
  }
  return false;
}

// A path from a JSONL line: absolute as it is, relative to the JSONL file's folder.
inline std::string jsonl_relative(const std::string& jsonl, const std::filesystem::path& p) {
  return (p.is_absolute() ? p : std::filesystem::path(jsonl).parent_path() / p).string();
}

}  // namespace peft
