// Config files in YAML as well as JSON. YAML is converted to the JSON value it denotes, so
// both formats go through the same schema checks (unknown keys stay errors). Scalars are
// typed as YAML 1.2's core schema types them: true/false, null/~, ints (decimal, 0o, 0x),
// floats (1e-4, .5), everything else a string; a quoted scalar is always a string.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace peft {

// `text` (one YAML document) as JSON, keys in file order. `where` names the source in
// errors, which give the line: "recipe.yaml:3: duplicate key 'base'". Refused: several
// documents, an empty one, keys that are not scalars, duplicate keys, .inf/.nan (JSON has
// no such numbers), tags other than YAML's standard ones, and aliases that expand into
// more than a million values.
nlohmann::ordered_json yaml_to_json(std::string_view text, const std::string& where);

// True for a path ending in .yaml or .yml (any case).
bool is_yaml_path(const std::string& path);

// A config file, JSON or YAML: .json is JSON, .yaml/.yml is YAML; any other name is JSON
// when its first character (after whitespace) is '{' or '[', else YAML.
nlohmann::ordered_json read_config_file(const std::string& path);

}  // namespace peft
