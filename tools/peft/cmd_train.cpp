// peft train --config CFG.{json,yaml} [key=value ...] [--resume]; peft eval.
#include <fstream>
#include <iostream>

#include "common.h"
#include "peft/train.h"
#include "peft/tuner.h"
#include "train/distributed.h"
#include "io/yaml_json.h"
#include "util/json_file.h"

namespace peft::cli {

void register_train(CLI::App& app) {
  // The registry's types, so the list cannot go stale.
  std::string types;
  for (const auto& t : supported_peft_types())
    if (t != "LORA") types += (types.empty() ? "" : ", ") + t;
  auto* cmd = app.add_subcommand("train",
                                 "Fine-tune a model with an adapter of any method (LoRA by default; " + types +
                                     ": docs/TUNERS.md; or a composition of adapters: docs/COMPOSITION.md). The "
                                     "config (JSON or YAML) is described in "
                                 "docs/TRAINING.md; key=value arguments override it (method.r=16, learning_rate=1e-4, "
                                 "'method={\"peft_type\": \"IA3\"}')");
  // Every key with its default, from the config itself, so the list cannot go stale.
  std::string keys = "Config keys (default values; docs/TRAINING.md explains each):\n";
  const nlohmann::json defaults = TrainConfig().to_json();  // bound: items() of a temporary would dangle
  for (const auto& [k, v] : defaults.items())
    keys += "  " + k + " = " + (v.is_string() && v.get<std::string>().empty() ? "\"\"" : v.dump()) + "\n";
  cmd->footer(keys + "\nExample: peft train model=SmolLM2-135M-Instruct.Q4_1.gguf train_file=chat.jsonl "
                     "output_dir=out 'method={\"r\": 16, \"target_modules\": \"all-linear\"}' num_train_epochs=1"
                     "\nCLIP on {\"image\", \"text\"} pairs: peft train model=clip-vit-base-patch32 "
                     "train_file=pairs.jsonl 'method={\"target_modules\": [\"q_proj\", \"v_proj\"]}'");
  auto cfg_path = std::make_shared<std::string>();
  auto overrides = std::make_shared<std::vector<std::string>>();
  auto resume = std::make_shared<bool>(false);
  auto overwrite = std::make_shared<bool>(false);
  auto nproc = std::make_shared<int>(0);
  cmd->add_option("--config,-c", *cfg_path, "Training config (JSON, or YAML if named .yaml/.yml)")->check(CLI::ExistingFile);
  cmd->add_option("overrides", *overrides, "key=value overrides of config fields");
  cmd->add_flag("--resume", *resume, "Continue from the newest intact checkpoint in output_dir (of the same run)");
  cmd->add_flag("--overwrite", *overwrite, "Delete an earlier run's checkpoints and outputs in output_dir first");
  cmd->add_option("--nproc", *nproc,
                  "Train in N local data-parallel processes (Gloo on CPU; NCCL with device=cuda and a GPU each); "
                  "the same global batch and losses as one process. Under torchrun, leave it out: RANK and "
                  "WORLD_SIZE say it (docs/TRAINING.md)");
  cmd->callback([=] {
    if (*nproc > 0) {
      if (std::getenv("WORLD_SIZE")) throw std::invalid_argument("--nproc cannot be used under torchrun (WORLD_SIZE is set)");
      // The workers get this command line without --nproc; the arguments pass as an argv, never through a shell.
      std::vector<std::string> argv = {"peft", "train"};
      if (!cfg_path->empty()) argv.insert(argv.end(), {"--config", *cfg_path});
      if (*resume) argv.push_back("--resume");
      if (*overwrite) argv.push_back("--overwrite");
      argv.insert(argv.end(), overrides->begin(), overrides->end());
      if (const int rc = launch_local_workers(*nproc, argv); rc != 0) std::exit(rc);
      return;
    }
    nlohmann::json j = cfg_path->empty() ? nlohmann::json::object() : nlohmann::json(read_config_file(*cfg_path));
    // Overrides apply before validation so that required keys may come from them.
    j = TrainConfig::with_overrides(std::move(j), *overrides);
    auto cfg = TrainConfig::from_json(j, cfg_path->empty() ? "command line" : *cfg_path);
    auto r = train(cfg, *resume, *overwrite);
    const char* rank = std::getenv("RANK");  // data-parallel: rank 0 wrote it
    if (!rank || std::string(rank) == "0")
      std::cerr << "adapter written to " << r.adapter_dir << " (metrics.jsonl, loss.png beside it)\n";
  });
}

void register_eval(CLI::App& app) {
  auto* cmd = app.add_subcommand("eval", "Loss and perplexity (causal LMs), accuracy (classifiers), or token accuracy "
                                         "and entity F1 (token classifiers) on a JSONL file");
  cmd->footer("Example: peft eval ./SmolLM2-135M --data eval.jsonl --adapter out/adapter");
  auto cfg = std::make_shared<TrainConfig>();
  auto adapters = std::make_shared<std::vector<std::string>>();
  cmd->add_option("model", cfg->model, "Base model: a Hugging Face folder or a .gguf file")
      ->required()
      ->check(CLI::ExistingPath);
  cmd->add_option("--data", cfg->eval_file, "JSONL data, formatted as for training")->required()->check(CLI::ExistingFile);
  cmd->add_option("--adapter", *adapters, "Adapter folder(s)")->check(CLI::ExistingDirectory);
  cmd->add_option("--tokenizer", cfg->tokenizer, "Tokenizer folder (default: the model folder)");
  cmd->add_option("--architecture", cfg->architecture, "Build this class, e.g. BertForSequenceClassification");
  cmd->add_option("--num-labels", cfg->num_labels, "With --architecture: classes of the new head");
  cmd->add_option("--seed", cfg->seed, "Seed of a newly initialized head (as in training)")->capture_default_str();
  cmd->add_option("--max-length", cfg->max_length, "Truncate examples to this many tokens")->capture_default_str();
  cmd->add_option("--batch-size", cfg->per_device_eval_batch_size, "Examples per batch")->capture_default_str();
  cmd->add_option("--format", cfg->format, "auto, input_ids, text, prompt_completion, messages, text_label, token_tags, input_target")
      ->capture_default_str();
  cmd->add_flag("--label-all-tokens", cfg->label_all_tokens,
               "token_tags: score every sub-token of a word, not only its first (as trained with label_all_tokens)");
  cmd->add_option("--device", cfg->device, "cpu, cuda or cuda:N")->capture_default_str();
  cmd->add_option("--dtype", cfg->precision, "fp32, or bf16 (autocast, as training with precision=bf16)")
      ->capture_default_str();
  cmd->callback([=] { std::cout << evaluate(*cfg, *adapters).dump() << "\n"; });
}

}  // namespace peft::cli
