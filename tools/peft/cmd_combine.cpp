// peft combine --recipe RECIPE.{json,yaml} [key=value ...]: HF PEFT's add_weighted_adapter as a command.
#include <iostream>

#include "common.h"
#include "peft/lora_combine.h"
#include "io/yaml_json.h"

namespace peft::cli {

namespace {
std::string types_line() {
  std::string s;
  for (const auto& t : combination_types()) s += (s.empty() ? "" : ", ") + t;
  return s;
}
}  // namespace

void register_combine(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "combine",
      "Merge LoRA (or (IA)3) adapters into one with weights, as HF PEFT's add_weighted_adapter (every combination "
      "type); writes an HF PEFT adapter folder. docs/COMBINE.md describes the recipe and each type");
  cmd->footer(
      "Recipe keys (a JSON object, or the same in YAML; key=value arguments set or override them, adapters.NAME=DIR adds one adapter):\n"
      "  base                  base model (Hugging Face folder or .gguf) the adapters were trained on\n"
      "  adapters              {\"name\": \"adapter folder\", ...}, in order\n"
      "  weights               one number per adapter, in the same order (negative subtracts)\n"
      "  combination_type      " + types_line() + " (default svd)\n"
      "  density               ties, dare_*, magnitude_prune*: fraction of entries kept, 0..1\n"
      "  majority_sign_method  ties, dare_ties*: total (default) or frequency\n"
      "  svd_rank              *svd: rank of the result (default: the largest adapter rank)\n"
      "  svd_clamp             *svd: clamp the factors at this quantile, 0..1\n"
      "  svd_full_matrices     *svd: torch.linalg.svd's full_matrices (default true)\n"
      "  seed                  torch.manual_seed before combining (required by dare_*)\n"
      "  output_dir            where adapter_config.json + adapter_model.safetensors go\n"
      "IA3 adapters (peft_type IA3) merge as the weighted sum of their vectors: only base, adapters, weights,\n"
      "output_dir (and combination_type linear) apply. One adapter with weight -1 negates it, 0.5 halves it.\n"
      "\nExample:\n"
      "  peft combine --recipe recipe.json\n"
      "  with recipe.json = {\"base\": \"SmolLM2-135M-Instruct\", \"adapters\": {\"bible\": \"out/bible\", "
      "\"fortunes\": \"out/fortunes\"},\n"
      "                      \"weights\": [0.7, 0.3], \"combination_type\": \"dare_ties\", \"density\": 0.5, "
      "\"seed\": 0, \"output_dir\": \"out/mix\"}\n"
      "  peft combine base=SmolLM2-135M-Instruct adapters.a=out/bible adapters.b=out/fortunes 'weights=[1,1]' "
      "combination_type=cat output_dir=out/cat");
  auto recipe_path = std::make_shared<std::string>();
  auto overrides = std::make_shared<std::vector<std::string>>();
  auto overwrite = std::make_shared<bool>(false);
  cmd->add_option("--recipe,-r", *recipe_path, "Recipe (JSON, or YAML if named .yaml/.yml)")->check(CLI::ExistingFile);
  cmd->add_option("overrides", *overrides, "key=value settings over the recipe");
  cmd->add_flag("--overwrite", *overwrite, "Replace an adapter already in output_dir");
  cmd->callback([=] {
    nlohmann::ordered_json j =
        recipe_path->empty() ? nlohmann::ordered_json::object() : read_config_file(*recipe_path);
    j = CombineRecipe::with_overrides(std::move(j), *overrides);
    const auto recipe = CombineRecipe::from_json(j, recipe_path->empty() ? "command line" : *recipe_path);
    run_combine(recipe, *overwrite);
    std::cerr << "combined adapter (" << recipe.options.combination_type << ") written to " << recipe.output_dir
              << "\n";
  });
}

}  // namespace peft::cli
