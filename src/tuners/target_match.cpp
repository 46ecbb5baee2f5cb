#include "tuners/target_match.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <iostream>
#include <map>
#include <set>
#include <stdexcept>

#include "peft/layers.h"
#include "util/regex.h"
#include "util/suggest.h"

namespace peft {

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), std::string::npos, suffix) == 0;
}

bool in_list_or_suffix(const std::vector<std::string>& list, const std::string& name) {
  for (const auto& t : list)
    if (name == t || ends_with(name, "." + t)) return true;
  return false;
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& e : v) s += (s.empty() ? "" : ", ") + e;
  return s;
}

// The distinct last segments of the model's module names ("q_proj", "lm_head", ...),
// without numbered list entries.
std::vector<std::string> leaf_names(Model& model) {
  std::set<std::string> leaves;
  for (const auto& [name, m] : model.named_modules()) {
    if (name.empty() || dynamic_cast<LayerAdapter*>(m)) continue;
    const std::string leaf = name.substr(name.rfind('.') == std::string::npos ? 0 : name.rfind('.') + 1);
    if (leaf.find_first_not_of("0123456789") != std::string::npos) leaves.insert(leaf);
  }
  return {leaves.begin(), leaves.end()};
}

}  // namespace

bool is_target(const TargetSpec& spec, const std::string& name) {
  if (spec.exclude_regex && Regex(*spec.exclude_regex).full_match(name)) return false;
  if (spec.exclude_list && in_list_or_suffix(*spec.exclude_list, name)) return false;
  // Adapters never go on modules_to_save modules.
  for (const auto& m : spec.modules_to_save)
    if (Regex("(^|.*\\.)" + m + "($|\\..*)").match_prefix(name)) return false;
  if (spec.target_regex) return Regex(*spec.target_regex).full_match(name);
  if (!spec.target_list) return false;
  if (std::find(spec.target_list->begin(), spec.target_list->end(), name) != spec.target_list->end()) return true;
  if (!in_list_or_suffix(*spec.target_list, name)) return false;
  if (spec.layers_to_transform.empty()) return true;
  // The first numbered segment after a layers_pattern entry (or any segment) is the layer.
  std::string idx;
  bool found = false;
  if (spec.layers_pattern.empty()) {
    found = Regex(R"(.*?\.[^.]*\.(\d+)\.)").match_prefix(name, &idx);
  } else {
    for (const auto& p : spec.layers_pattern)
      if ((found = Regex("(?:^|.*?\\.)" + p + "\\.(\\d+)\\.").match_prefix(name, &idx))) break;
  }
  if (!found || idx.empty()) return false;
  const int64_t layer = std::stoll(idx);
  return std::find(spec.layers_to_transform.begin(), spec.layers_to_transform.end(), layer) !=
         spec.layers_to_transform.end();
}

std::vector<std::pair<std::string, Module*>> find_targets(Model& model, TargetSpec spec, const std::string& task_type) {
  auto modules = model.named_modules();
  bool from_all_linear = false;
  if (spec.target_regex && [&] {
        std::string lower = *spec.target_regex;
        std::transform(lower.begin(), lower.end(), lower.begin(), ::tolower);
        return lower == "all-linear";
      }()) {
    // Every Linear / Conv1D, minus the output embedding layer (LMs) or the SEQ_CLS head.
    std::vector<std::string> excluded;
    if (model.task() == TaskKind::kCausalLM) excluded.push_back("lm_head");
    else if (task_type == "SEQ_CLS")
      for (const char* head : {"score", "classifier"})
        if (model.find(head)) {
          excluded.push_back(head);
          break;
        }
    std::vector<std::string> names;
    for (const auto& [name, m] : modules)
      if (auto* l = dynamic_cast<AdaptableLayer*>(m); l && l->kind() == LayerKind::kLinear &&
          std::find(excluded.begin(), excluded.end(), name) == excluded.end() &&
          !(model.task() == TaskKind::kCausalLM && l == model.output_layer()))  // Whisper's proj_out
        names.push_back(name);
    spec.target_regex.reset();
    spec.target_list = names;
    from_all_linear = true;
  }
  std::vector<std::pair<std::string, Module*>> out;
  for (const auto& [name, m] : modules)
    if (!name.empty() && !dynamic_cast<LayerAdapter*>(m) && is_target(spec, name)) out.emplace_back(name, m);
  // A listed name that matches nothing is a typo or a name of another architecture.
  const auto leaves = leaf_names(model);
  std::vector<std::string> unmatched;
  if (spec.target_list && !from_all_linear)
    for (const auto& t : *spec.target_list) {
      bool hit = false;
      for (const auto& [name, m] : modules)
        if (!name.empty() && (name == t || ends_with(name, "." + t))) hit = true;
      if (!hit) unmatched.push_back(t);
    }
  auto missing = [&] {
    return "'" + unmatched.front() + "'" + did_you_mean(unmatched.front(), leaves) + "; " + model.type_name() +
           "'s module names end in: " + join(leaves);
  };
  if (out.empty()) {
    if (!unmatched.empty()) throw std::invalid_argument("target_modules: no module is named " + missing());
    std::string what = spec.target_regex ? "regex '" + *spec.target_regex + "'"
                                         : "target_modules [" + join(spec.target_list.value_or(std::vector<std::string>{})) + "]";
    if (!spec.layers_to_transform.empty()) what += " with layers_to_transform";
    throw std::invalid_argument(what + " matched no module of " + model.type_name() + "; its module names end in: " +
                                join(leaves));
  }
  if (!unmatched.empty()) std::cerr << "warning: target_modules: no module is named " << missing() << "\n";
  return out;
}

std::vector<std::pair<std::string, Module*>> find_modules_to_save(Model& model, const std::vector<std::string>& names) {
  std::vector<std::pair<std::string, Module*>> out;
  for (const auto& [name, m] : model.named_modules()) {
    if (name.empty() || dynamic_cast<LayerAdapter*>(m)) continue;
    for (const auto& n : names)
      if (ends_with(name, n)) {
        out.emplace_back(name, m);
        break;
      }
  }
  return out;
}

ListOrRegex injected_targets(Model& model, const AdapterConfig& c) {
  ListOrRegex t{c.targets.target_list, c.targets.target_regex};
  if (t.regex) {
    std::string lower = *t.regex;
    std::transform(lower.begin(), lower.end(), lower.begin(), ::tolower);
    if (lower == "all-linear") {
      std::set<std::string> names;
      for (const auto& [path, _] : c.layer_targets(model)) names.insert(path.substr(path.rfind('.') + 1));
      t.regex.reset();
      t.list = std::vector<std::string>(names.begin(), names.end());
    }
  }
  return t;
}

ListOrRegex united(const std::vector<ListOrRegex>& values, const std::vector<std::string>& names, const char* key) {
  ListOrRegex out;
  std::set<std::string> list;
  std::string regex;
  for (size_t i = 0; i < values.size(); ++i) {
    if (values[i].regex.has_value() != values[0].regex.has_value())
      throw std::invalid_argument("adapters '" + names[0] + "' and '" + names[i] + "' give " + key +
                                  " as a list and as a regex; HF PEFT's add_weighted_adapter refuses to combine "
                                  "the two kinds");
    if (values[i].regex) regex += (regex.empty() ? "(" : "|(") + *values[i].regex + ")";
    else if (values[i].list) list.insert(values[i].list->begin(), values[i].list->end());
  }
  if (values[0].regex) out.regex = regex;
  else out.list = std::vector<std::string>(list.begin(), list.end());
  return out;
}

void check_no_shared_modules_to_save(Model& model, const std::vector<std::string>& adapters,
                                     const std::vector<const TargetSpec*>& targets) {
  std::map<std::string, std::vector<std::string>> saved_by;
  for (size_t i = 0; i < adapters.size(); ++i)
    for (const auto& [path, _] : find_modules_to_save(model, targets[i]->modules_to_save))
      if (auto& who = saved_by[path]; who.push_back(adapters[i]), who.size() == 2)
        throw std::invalid_argument("adapters '" + who[0] + "' and '" + who[1] + "' both train their own copy of '" +
                                    path + "' (modules_to_save), which HF PEFT cannot merge");
}

}  // namespace peft
