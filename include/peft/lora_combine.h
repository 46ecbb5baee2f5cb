// Weighted merges of LoRA adapters: HF PEFT's LoraModel.add_weighted_adapter (0.21), every
// combination type, with its arithmetic, and `peft combine`'s recipe around it.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "peft/peft_model.h"

namespace peft {

struct WeightedAdapterOptions {
  // svd, linear, cat, ties, ties_svd, dare_linear, dare_ties, dare_linear_svd,
  // dare_ties_svd, magnitude_prune, magnitude_prune_svd (HF's default: svd).
  std::string combination_type = "svd";
  std::optional<int64_t> svd_rank;   // *_svd: rank of the result (default: the largest input rank)
  std::optional<double> svd_clamp;   // *_svd: clamp U and Vh at this quantile of their entries
  bool svd_full_matrices = true;     // *_svd: torch.linalg.svd(full_matrices=...)
  std::optional<double> density;     // ties, dare_*, magnitude_prune*: fraction of entries kept
  std::string majority_sign_method = "total";  // ties and dare_ties: total | frequency
};

// The combination types, in HF's order.
const std::vector<std::string>& combination_types();

// Checks the options alone (type, density, svd settings) and that there is one weight per
// adapter; throws std::invalid_argument naming the key.
void validate_weighted_adapter_options(const WeightedAdapterOptions& options, size_t n_adapters, size_t n_weights);

// Adds LoRA adapter `adapter_name` to `peft`, merged from `adapters` (LoRA adapters already
// on it) with `weights`, exactly as HF PEFT's add_weighted_adapter does: its config is
// adapters[0]'s with r = lora_alpha = the new rank, the union of the targets, and no rank
// or alpha patterns; one adapter always merges linearly. DARE draws its masks from the
// default CPU generator (seed it with at::manual_seed as an HF user calls
// torch.manual_seed) after drawing what HF's fresh adapter init draws, so equal seeds give
// HF's masks. Stricter than HF: options that the type ignores, weights of another length
// and adapters HF would merge into something else (DoRA, PiSSA/OLoRA init) are errors.
void add_weighted_adapter(PeftModel& peft, const std::vector<std::string>& adapters,
                          const std::vector<double>& weights, const std::string& adapter_name,
                          const WeightedAdapterOptions& options = {});

// `peft combine`'s recipe (docs/COMBINE.md): adapters {name: folder} in order, their weights,
// the options above, a seed for torch.manual_seed, and where to write the result. The
// adapters' peft_type picks the merge: LoRA (add_weighted_adapter) or IA3
// (add_weighted_ia3_adapter, include/peft/ia3_combine.h, which takes no options).
struct CombineRecipe {
  std::string peft_type = "LORA";  // of every adapter: "LORA" or "IA3"
  std::string base;
  std::vector<std::pair<std::string, std::string>> adapters;
  std::vector<double> weights;
  WeightedAdapterOptions options;
  std::optional<uint64_t> seed;
  std::string output_dir;

  // Errors name `where` and the key; unknown keys get the nearest known one. Reads each
  // adapter's adapter_config.json for its peft_type: adapters of two methods, another
  // method, or a LoRA-only key in an IA3 recipe are errors naming the adapter or key.
  static CombineRecipe from_json(const nlohmann::ordered_json& j, const std::string& where);
  // "key=value" arguments over the recipe (value parsed as JSON, else a string;
  // adapters.NAME=DIR sets one adapter).
  static nlohmann::ordered_json with_overrides(nlohmann::ordered_json j, const std::vector<std::string>& kv);
  // The recipe's keys, for --help.
  static std::vector<std::string> keys();
};

// Loads the base and the adapters, seeds (LoRA), combines and writes output_dir
// (adapter_config.json + adapter_model.safetensors, HF PEFT's format). A folder that
// already holds an adapter is replaced only with `overwrite`.
void run_combine(const CombineRecipe& recipe, bool overwrite);

}  // namespace peft
