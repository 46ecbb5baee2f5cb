#include "io/yaml_json.h"

#include <yaml-cpp/depthguard.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <optional>
#include <stdexcept>

#include "util/json_file.h"

namespace peft {

namespace {

using ojson = nlohmann::ordered_json;

constexpr size_t kMaxValues = size_t(1) << 20;  // aliases share nodes; expanded, they may not
const std::string kTag = "tag:yaml.org,2002:";

bool any_of(std::string_view s, std::initializer_list<std::string_view> options) {
  return std::find(options.begin(), options.end(), s) != options.end();
}

bool all_in(std::string_view s, std::string_view allowed) {
  return !s.empty() && s.find_first_not_of(allowed) == std::string_view::npos;
}

// YAML 1.2 core schema ints: [-+]?[0-9]+, 0o[0-7]+, 0x[0-9a-fA-F]+. Returned as nlohmann's
// JSON parser would type the same number: unsigned when >= 0, signed below, a float when
// too large for 64 bits.
std::optional<ojson> core_int(std::string_view s) {
  int base = 10;
  bool negative = false;
  if (s.size() > 2 && s.substr(0, 2) == "0o" && all_in(s.substr(2), "01234567")) {
    base = 8, s.remove_prefix(2);
  } else if (s.size() > 2 && s.substr(0, 2) == "0x" && all_in(s.substr(2), "0123456789abcdefABCDEF")) {
    base = 16, s.remove_prefix(2);
  } else {
    if (!s.empty() && (s[0] == '-' || s[0] == '+')) negative = s[0] == '-', s.remove_prefix(1);
    if (!all_in(s, "0123456789")) return std::nullopt;
  }
  uint64_t v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v, base);
  if (ec == std::errc::result_out_of_range || (negative && v > uint64_t(INT64_MAX) + 1)) {
    double d = 0;
    if (base == 10) std::from_chars(s.data(), s.data() + s.size(), d);  // correctly rounded
    else
      for (char c : s) d = d * base + (c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
    return ojson(negative ? -d : d);
  }
  if (!negative) return ojson(v);
  return ojson(v == uint64_t(INT64_MAX) + 1 ? INT64_MIN : -static_cast<int64_t>(v));
}

// [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?
bool core_float_syntax(std::string_view s) {
  size_t i = 0;
  auto digits = [&] {
    const size_t start = i;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i;
    return i > start;
  };
  if (i < s.size() && (s[i] == '-' || s[i] == '+')) ++i;
  if (i < s.size() && s[i] == '.') {
    ++i;
    if (!digits()) return false;
  } else {
    if (!digits()) return false;
    if (i < s.size() && s[i] == '.') ++i, digits();
  }
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < s.size() && (s[i] == '-' || s[i] == '+')) ++i;
    if (!digits()) return false;
  }
  return i == s.size();
}

class Converter {
 public:
  explicit Converter(const std::string& where) : where_(where) {}

  ojson convert(const YAML::Node& n, int depth) {
    if (++values_ > kMaxValues)
      fail(n.Mark(), "expands to more than " + std::to_string(kMaxValues) + " values (aliases?)");
    if (depth > kMaxJsonDepth) fail(n.Mark(), "nested deeper than " + std::to_string(kMaxJsonDepth) + " levels");
    switch (n.Type()) {
      case YAML::NodeType::Null:
        return nullptr;
      case YAML::NodeType::Scalar:
        return scalar(n);
      case YAML::NodeType::Sequence: {
        check_collection_tag(n, "seq");
        ojson out = ojson::array();
        for (const auto& item : n) out.push_back(convert(item, depth + 1));
        return out;
      }
      case YAML::NodeType::Map: {
        check_collection_tag(n, "map");
        ojson out = ojson::object();
        for (const auto& kv : n) {
          if (!kv.first.IsScalar()) fail(kv.first.Mark(), "a key must be a plain value, not a list or mapping");
          const std::string& key = kv.first.Scalar();
          if (out.contains(key)) fail(kv.first.Mark(), "duplicate key '" + key + "'");
          out[key] = convert(kv.second, depth + 1);
        }
        return out;
      }
      default:
        fail(n.Mark(), "undefined value");
    }
  }

 private:
  [[noreturn]] void fail(const YAML::Mark& m, const std::string& msg) const {
    const std::string line = m.is_null() ? "" : ":" + std::to_string(m.line + 1);
    throw std::runtime_error(where_ + line + ": " + msg);
  }

  void check_collection_tag(const YAML::Node& n, const char* kind) const {
    const std::string& tag = n.Tag();
    if (tag != "?" && tag != "!" && tag != kTag + kind) fail(n.Mark(), "unsupported tag '" + tag + "'");
  }

  ojson scalar(const YAML::Node& n) const {
    const std::string& tag = n.Tag();
    const std::string& s = n.Scalar();
    if (tag == "!" || tag == kTag + "str") return s;  // quoted (or !!str): a string as written
    if (tag != "?" && tag.rfind(kTag, 0) != 0) fail(n.Mark(), "unsupported tag '" + tag + "'");
    const ojson v = resolve(n, s);
    if (tag == "?") return v;
    const std::string kind = tag.substr(kTag.size());
    const bool fits = (kind == "null" && v.is_null()) || (kind == "bool" && v.is_boolean()) ||
                      (kind == "int" && v.is_number_integer()) || (kind == "float" && v.is_number());
    if (!fits) fail(n.Mark(), "'" + s + "' is not a valid !!" + kind);
    return kind == "float" ? ojson(v.get<double>()) : v;
  }

  // The core schema's type of a plain scalar.
  ojson resolve(const YAML::Node& n, const std::string& s) const {
    if (any_of(s, {"", "~", "null", "Null", "NULL"})) return nullptr;
    if (any_of(s, {"true", "True", "TRUE"})) return true;
    if (any_of(s, {"false", "False", "FALSE"})) return false;
    if (auto i = core_int(s)) return *i;
    if (core_float_syntax(s)) {
      std::string_view digits = s;
      if (digits[0] == '+') digits.remove_prefix(1);
      double d = 0;
      const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), d);
      if (ec != std::errc() || end != digits.data() + digits.size()) fail(n.Mark(), "number out of range: " + s);
      return d;
    }
    std::string_view t = s;
    if (!t.empty() && (t[0] == '-' || t[0] == '+')) t.remove_prefix(1);
    if (any_of(t, {".inf", ".Inf", ".INF", ".nan", ".NaN", ".NAN"}))
      fail(n.Mark(), "'" + s + "' has no JSON equivalent (quote it for a string)");
    return s;
  }

  const std::string& where_;
  size_t values_ = 0;
};

}  // namespace

ojson yaml_to_json(std::string_view text, const std::string& where) {
  std::vector<YAML::Node> docs;
  try {
    docs = YAML::LoadAll(std::string(text));
  } catch (const YAML::DeepRecursion& e) {  // yaml-cpp's own bound, reported as "bad file"
    throw std::runtime_error(where + ":" + std::to_string(e.mark.line + 1) + ": YAML nested deeper than " +
                             std::to_string(e.depth() - 1) + " levels");
  } catch (const YAML::Exception& e) {
    const std::string at = e.mark.is_null() ? "" : ":" + std::to_string(e.mark.line + 1) + ":" +
                                                       std::to_string(e.mark.column + 1);
    throw std::runtime_error(where + at + ": invalid YAML: " + e.msg);
  }
  if (docs.empty()) throw std::runtime_error(where + ": no YAML document (the file is empty or only comments)");
  if (docs.size() > 1)
    throw std::runtime_error(where + ":" + std::to_string(docs[1].Mark().line + 1) +
                             ": a second YAML document; a config file holds one");
  return Converter(where).convert(docs[0], 0);
}

bool is_yaml_path(const std::string& path) {
  std::string lower = path;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  auto ends_with = [&](std::string_view suffix) { return lower.ends_with(suffix); };
  return ends_with(".yaml") || ends_with(".yml");
}

ojson read_config_file(const std::string& path) {
  const std::string text = read_file_bytes(path);
  bool yaml = is_yaml_path(path);
  std::string lower = path;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  if (!yaml && !lower.ends_with(".json")) {
    size_t i = text.compare(0, 3, "\xEF\xBB\xBF") == 0 ? 3 : 0;  // a UTF-8 byte-order mark
    i = text.find_first_not_of(" \t\r\n", i);
    yaml = i == std::string::npos || (text[i] != '{' && text[i] != '[');
  }
  return yaml ? yaml_to_json(text, path) : parse_ordered_json(text, path);
}

}  // namespace peft
