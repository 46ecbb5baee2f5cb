// Helpers the `peft` subcommands share.
#pragma once

#include <ATen/core/Tensor.h>

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "peft/model.h"

namespace peft::cli {

// Options every command that loads a model takes.
struct ModelArgs {
  std::string dir;
  std::string dtype = "float32";
  std::string device = "cpu";
  void add_to(CLI::App* app);
  std::shared_ptr<Model> load() const;
};

// A JSON file holding a list of token-id lists; `what` names it in errors.
std::vector<std::vector<int64_t>> read_id_lists(const std::string& path);

// Right-pads ragged rows into [batch, max_len] ids and a 1/0 attention mask.
void pad_right(const std::vector<std::vector<int64_t>>& rows, int64_t pad, at::Tensor* ids, at::Tensor* mask);

at::ScalarType parse_dtype(const std::string& name);

void register_inspect(CLI::App& app);
void register_forward(CLI::App& app);
void register_generate(CLI::App& app);

}  // namespace peft::cli
