// peft combine's recipe: parsing with errors that name the key, key=value overrides, and
// the run (load, seed, add_weighted_adapter, save).
#include <ATen/ATen.h>
#include <ATen/Context.h>

#include <filesystem>
#include <iostream>
#include <set>
#include <stdexcept>

#include "peft/ia3_combine.h"
#include "peft/lora_combine.h"
#include "util/json_file.h"
#include "util/suggest.h"

namespace fs = std::filesystem;

namespace peft {

std::vector<std::string> CombineRecipe::keys() {
  return {"base",     "adapters",  "weights",           "combination_type", "density", "majority_sign_method",
          "svd_rank", "svd_clamp", "svd_full_matrices", "seed",             "output_dir"};
}

namespace {

using ojson = nlohmann::ordered_json;

std::string required_string(const ojson& j, const std::string& key, const std::string& where) {
  if (!j.contains(key) || j[key].is_null()) throw std::runtime_error(where + ": '" + key + "' is required");
  auto s = strict_get<std::string>(j[key], where + ": '" + key + "'");
  if (s.empty()) throw std::runtime_error(where + ": '" + key + "' is empty");
  return s;
}

std::vector<std::pair<std::string, std::string>> read_adapters(const ojson& j, const std::string& where) {
  if (!j.contains("adapters") || j["adapters"].is_null())
    throw std::runtime_error(where + ": 'adapters' is required ({\"name\": \"adapter folder\", ...}, in order)");
  const ojson& a = j["adapters"];
  if (!a.is_object() || a.empty())
    throw std::runtime_error(where + ": 'adapters' must be a non-empty object {\"name\": \"adapter folder\", ...}, got " +
                             quote_json(a));
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& [name, dir] : a.items()) {
    const std::string what = where + ": 'adapters." + name + "'";
    auto d = strict_get<std::string>(dir, what);
    if (!fs::is_directory(d)) throw std::runtime_error(what + ": no such folder '" + d + "'");
    if (!fs::exists(fs::path(d) / "adapter_config.json"))
      throw std::runtime_error(what + ": '" + d + "' has no adapter_config.json");
    out.emplace_back(name, d);
  }
  return out;
}

// The adapters' method, from their adapter_config.json: LORA or IA3, the same for all.
std::string method_of(const std::vector<std::pair<std::string, std::string>>& adapters, const std::string& where) {
  std::string type, first;
  for (const auto& [name, dir] : adapters) {
    const std::string file = (fs::path(dir) / "adapter_config.json").string();
    const ojson cfg = read_ordered_json_file(file);
    if (!cfg.is_object() || !cfg.contains("peft_type") || !cfg["peft_type"].is_string())
      throw std::runtime_error(file + ": 'peft_type' is missing or not a string");
    const auto t = cfg["peft_type"].get<std::string>();
    if (t != "LORA" && t != "IA3")
      throw std::runtime_error(where + ": 'adapters." + name + "' is a " + t +
                               " adapter; HF PEFT 0.21 has add_weighted_adapter only for LORA and IA3 adapters");
    if (type.empty()) {
      type = t;
      first = name;
    } else if (t != type) {
      throw std::runtime_error(where + ": 'adapters." + name + "' is " + t + " but 'adapters." + first + "' is " +
                               type + "; a recipe combines adapters of one method");
    }
  }
  return type;
}

bool given(const ojson& j, const char* key) { return j.contains(key) && !j[key].is_null(); }

// IA3 merges are a weighted sum of the ia3_l vectors: LoRA's merge options do not apply.
void check_ia3_keys(const ojson& j, const std::string& where) {
  if (given(j, "combination_type")) {
    const auto t = strict_get<std::string>(j["combination_type"], where + ": 'combination_type'");
    if (t != "linear")
      throw std::runtime_error(where + ": 'combination_type' is '" + t +
                               "' but IA3 adapters merge only linearly (a weighted sum of their ia3_l vectors, as "
                               "HF's IA3Model.add_weighted_adapter); leave the key out or set linear");
  }
  for (const char* key : {"density", "majority_sign_method", "svd_rank", "svd_clamp", "svd_full_matrices", "seed"})
    if (given(j, key))
      throw std::runtime_error(where + ": '" + key +
                               "' is a LoRA-only key; IA3 adapters merge as a weighted sum of their ia3_l vectors "
                               "(no pruning, SVD or random masks)");
}

template <class T>
std::optional<T> optional_value(const ojson& j, const char* key, const std::string& where) {
  if (!j.contains(key) || j[key].is_null()) return std::nullopt;
  return strict_get<T>(j[key], where + ": '" + key + "'");
}

}  // namespace

CombineRecipe CombineRecipe::from_json(const ojson& j, const std::string& where) {
  if (!j.is_object()) throw std::runtime_error(where + ": the recipe must be a JSON object");
  const auto known = keys();
  for (const auto& [k, _] : j.items())
    if (std::find(known.begin(), known.end(), k) == known.end())
      throw std::runtime_error(where + ": unknown key '" + k + "'" + did_you_mean(k, known) +
                               " (peft combine --help lists the keys)");
  CombineRecipe r;
  r.base = required_string(j, "base", where);
  r.output_dir = required_string(j, "output_dir", where);
  r.adapters = read_adapters(j, where);
  if (!j.contains("weights") || !j["weights"].is_array())
    throw std::runtime_error(where + ": 'weights' must be a list of numbers, one per adapter");
  for (const auto& w : j["weights"]) r.weights.push_back(strict_get<double>(w, where + ": 'weights' entries"));
  r.peft_type = method_of(r.adapters, where);
  if (r.peft_type == "IA3") {
    check_ia3_keys(j, where);
    r.options.combination_type = "linear";
    if (r.weights.size() != r.adapters.size())
      throw std::runtime_error(where + ": 'weights' has " + std::to_string(r.weights.size()) + " entries for " +
                               std::to_string(r.adapters.size()) + " adapters (one weight per adapter, in order)");
    return r;
  }
  auto& o = r.options;
  if (auto t = optional_value<std::string>(j, "combination_type", where)) o.combination_type = *t;
  o.density = optional_value<double>(j, "density", where);
  if (auto m = optional_value<std::string>(j, "majority_sign_method", where)) o.majority_sign_method = *m;
  o.svd_rank = optional_value<int64_t>(j, "svd_rank", where);
  o.svd_clamp = optional_value<double>(j, "svd_clamp", where);
  if (auto f = optional_value<bool>(j, "svd_full_matrices", where)) o.svd_full_matrices = *f;
  r.seed = optional_value<uint64_t>(j, "seed", where);
  // The library's checks, with the recipe named.
  try {
    validate_weighted_adapter_options(o, r.adapters.size(), r.weights.size());
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error(where + ": " + e.what());
  }
  if (o.combination_type.rfind("dare_", 0) == 0 && !r.seed)
    throw std::runtime_error(where + ": combination_type '" + o.combination_type +
                             "' draws random masks: give 'seed' (torch.manual_seed before combining)");
  return r;
}

ojson CombineRecipe::with_overrides(ojson j, const std::vector<std::string>& kv) {
  if (j.is_null()) j = ojson::object();
  for (const auto& s : kv) {
    const auto eq = s.find('=');
    if (eq == std::string::npos || eq == 0) throw std::runtime_error("argument '" + s + "' is not key=value");
    const std::string key = s.substr(0, eq), value = s.substr(eq + 1);
    ojson v;
    try {
      v = parse_ordered_json(value, "");
    } catch (const std::exception&) {
      v = value;  // not JSON: a string (a path, a type name)
    }
    if (key.rfind("adapters.", 0) == 0) {
      if (!j["adapters"].is_object()) j["adapters"] = ojson::object();
      j["adapters"][key.substr(9)] = value;  // a folder, taken as written
    } else {
      j[key] = v;
    }
  }
  return j;
}

void run_combine(const CombineRecipe& r, bool overwrite) {
  const fs::path out(r.output_dir);
  if (!overwrite && (fs::exists(out / "adapter_model.safetensors") || fs::exists(out / "adapter_config.json")))
    throw std::runtime_error("output_dir '" + r.output_dir + "' already holds an adapter (pass --overwrite to replace it)");
  PeftModel peft(load_model(r.base));
  std::vector<std::string> names;
  std::set<std::string> bases;
  for (const auto& [name, dir] : r.adapters) {
    peft.load_adapter(dir, name);
    names.push_back(name);
    bases.insert(peft.config(name).base_model_name_or_path);
  }
  if (bases.size() > 1)
    std::cerr << "warning: the adapters name different base_model_name_or_path values; they all loaded on '" << r.base
              << "'\n";
  std::string combined = "combined";
  while (std::find(names.begin(), names.end(), combined) != names.end()) combined += "_";
  if (r.peft_type == "IA3") {
    add_weighted_ia3_adapter(peft, names, r.weights, combined);
  } else {
    if (r.seed) at::manual_seed(*r.seed);
    add_weighted_adapter(peft, names, r.weights, combined, r.options);
  }
  peft.save_adapter(r.output_dir, combined);
}

}  // namespace peft
