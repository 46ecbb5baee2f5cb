// Helpers the `peft` subcommands share.
#pragma once

#include <ATen/core/Tensor.h>

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "peft/model.h"
#include "peft/peft_model.h"

namespace peft::cli {

// Options every command that loads a model takes.
struct ModelArgs {
  std::string dir;
  std::string dtype = "float32";
  std::string device = "cpu";
  // QLoRA base: Linear weights stored 4-bit as they load.
  bool load_in_4bit = false;
  std::string quant_type = "nf4";
  bool double_quant = false;
  int64_t blocksize = 64;
  std::string compute_dtype;  // empty: the checkpoint's, else float32
  std::vector<std::string> skip_modules;  // llm_int8_skip_modules
  void add_to(CLI::App* app);
  std::shared_ptr<Model> load() const;
};

// --adapter DIR (repeatable), --adapter-name NAME (one per adapter), --merged.
struct AdapterArgs {
  std::vector<std::string> dirs, names;
  bool merged = false;
  void add_to(CLI::App* app);
  // Loads the adapters onto `model`, activates all of them, merges if asked.
  std::unique_ptr<PeftModel> apply(std::shared_ptr<Model> model) const;
};

// A JSON file holding a list of token-id lists; `what` names it in errors.
std::vector<std::vector<int64_t>> read_id_lists(const std::string& path);

// Right-pads ragged rows into [batch, max_len] ids and a 1/0 attention mask.
void pad_right(const std::vector<std::vector<int64_t>>& rows, int64_t pad, at::Tensor* ids, at::Tensor* mask);

at::ScalarType parse_dtype(const std::string& name);

// Copies what a model carries besides its weights (tokenizer, chat template, generation
// config) from the model at `model_path` (a folder, or a GGUF file's metadata) into `out`,
// so a folder written from it tokenizes, chats and generates as the original does.
// Returns the number of files written (none when `out` is the model's own folder).
int copy_companions(const std::string& model_path, const std::string& out);

void register_inspect(CLI::App& app);
void register_forward(CLI::App& app);
void register_generate(CLI::App& app);
void register_merge(CLI::App& app);
void register_tokenize(CLI::App& app);
void register_train(CLI::App& app);
void register_eval(CLI::App& app);
void register_classify(CLI::App& app);
void register_convert(CLI::App& app);
void register_export_gguf(CLI::App& app);
void register_quantize(CLI::App& app);
void register_combine(CLI::App& app);
void register_serve(CLI::App& app);

}  // namespace peft::cli
