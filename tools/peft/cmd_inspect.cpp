// peft inspect MODEL_DIR: what a model folder holds.
#include <ATen/ATen.h>

#include "util/format.h"
#include "util/json_file.h"

#include <filesystem>
#include <iostream>
#include <fstream>
#include <map>

#include "common.h"

namespace peft::cli {

namespace {


// What `method` (adapter_config.json fields, inline or a file) would train on the model:
// HF PEFT's trainable-parameter line and the modules it touches.
void inspect_method(std::shared_ptr<Model> model, const std::string& method) {
  nlohmann::ordered_json j = std::filesystem::exists(method) ? read_ordered_json_file(method)
                                                              : parse_ordered_json(method, "--method");
  if (!j.is_object()) throw std::runtime_error("--method: expected a JSON object of adapter settings");
  if (!j.contains("peft_type")) j["peft_type"] = "LORA";
  auto cfg = parse_user_adapter_config(j, "--method");
  cfg->inference_mode = false;
  PeftModel peft(model);
  peft.add_adapter("default", *cfg);
  auto saved = peft.config("default").to_json();
  std::cout << "method:       " << cfg->peft_type() << "\n";
  if (saved.contains("target_modules") && !saved["target_modules"].is_null())
    std::cout << "targets:      " << saved["target_modules"].dump() << "\n";
  std::cout << peft.trainable_parameters_line() << "\n";
}

void inspect(const ModelArgs& args, const std::string& method) {
  auto model = args.load();
  if (!method.empty()) return inspect_method(model, method);
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
  auto method = std::make_shared<std::string>();
  cmd->add_option("--method", *method,
                  "Adapter config (JSON text or a file, adapter_config.json fields, e.g. "
                  "'{\"peft_type\": \"IA3\"}'): print what it would train on the model, in HF PEFT's format");
  cmd->callback([args, method] {
    if (std::filesystem::exists(std::filesystem::path(args->dir) / "adapter_config.json"))
      inspect_adapter(args->dir);
    else
      inspect(*args, *method);
  });
}

}  // namespace peft::cli
