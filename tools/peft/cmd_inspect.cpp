// peft inspect MODEL_DIR: what a model folder holds.
#include <ATen/ATen.h>

#include "util/format.h"

#include <filesystem>
#include <iostream>
#include <map>

#include "common.h"

namespace peft::cli {

namespace {


void inspect(const ModelArgs& args) {
  auto model = args.load();
  std::cout << "architecture: " << model->type_name() << "\n"
            << "task:         " << task_kind_name(model->task()) << "\n";
  // Group parameters by the class of the module that owns them, and by dtype.
  std::map<std::pair<std::string, std::string>, std::pair<int64_t, int64_t>> groups;  // -> (tensors, elements)
  for (const auto& [name, t] : model->named_parameters()) {
    auto dot = name.rfind('.');
    Module* owner = dot == std::string::npos ? model.get() : model->find(name.substr(0, dot));
    auto& g = groups[{owner ? owner->type_name() : "?", std::string(c10::toString(t.scalar_type()))}];
    g.first += 1;
    g.second += t.numel();
  }
  std::printf("%-28s %-10s %8s %14s\n", "module type", "dtype", "tensors", "parameters");
  for (const auto& [key, g] : groups)
    std::printf("%-28s %-10s %8lld %14s\n", key.first.c_str(), key.second.c_str(), static_cast<long long>(g.first),
                with_commas(g.second).c_str());
  std::cout << "total parameters: " << with_commas(model->num_parameters()) << " (" << model->num_parameters()
            << ")\n";
}

}  // namespace

void inspect_adapter(const std::string& dir);

void register_inspect(CLI::App& app) {
  auto* cmd = app.add_subcommand("inspect",
                                 "Show a model's architecture and parameter counts, or, for an adapter folder, "
                                 "its method, rank, targets, size and base model");
  auto args = std::make_shared<ModelArgs>();
  args->add_to(cmd);
  cmd->callback([args] {
    if (std::filesystem::exists(std::filesystem::path(args->dir) / "adapter_config.json"))
      inspect_adapter(args->dir);
    else
      inspect(*args);
  });
}

}  // namespace peft::cli
