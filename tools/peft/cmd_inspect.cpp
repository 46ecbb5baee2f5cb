// peft inspect MODEL_DIR: what a model folder holds.
#include <ATen/ATen.h>

#include "peft/clip.h"
#include "peft/seq2seq.h"
#include "util/format.h"
#include "io/yaml_json.h"
#include "util/json_file.h"

#include <filesystem>
#include <iostream>
#include <fstream>
#include <map>

#include "common.h"
#include "peft/layers.h"
#include "quant/linear_4bit.h"

namespace peft::cli {

namespace {


// What `method` (adapter_config.json fields, inline or a file) would train on the model:
// HF PEFT's trainable-parameter line and the modules it touches.
void inspect_method(std::shared_ptr<Model> model, const std::string& method) {
  std::error_code not_a_path;  // inline JSON longer than a file name may be
  nlohmann::ordered_json j = std::filesystem::exists(method, not_a_path) ? read_config_file(method)
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

// QLoRA bases: the 4-bit settings, how many layers, and the bytes per parameter of the
// whole model (packed codes and their quantization state included, as saved).
void inspect_4bit(Model& model) {
  std::map<std::string, int64_t> kinds;  // settings -> layers
  std::map<const void*, const quant::Weight4bit*> four_bit;
  for (auto& [name, m] : model.named_modules()) {
    auto* l = dynamic_cast<Linear*>(m);
    if (!l || !l->weight_4bit) continue;
    const auto& w = *l->weight_4bit;
    four_bit[l->weight.data_ptr()] = &w;
    kinds[std::string(quant::quant_type_name(w.state.type)) + ", blocksize " + std::to_string(w.state.blocksize) +
          ", double quant " + (w.state.nested ? "yes" : "no") + ", compute dtype " +
          (w.compute_dtype == at::kBFloat16 ? "bfloat16" : w.compute_dtype == at::kHalf ? "float16" : "float32")]++;
  }
  if (four_bit.empty()) return;
  int64_t params = 0, bytes = 0;
  for (const auto& [name, t] : model.named_parameters()) {
    bytes += static_cast<int64_t>(t.nbytes());
    auto q = four_bit.find(t.data_ptr());
    if (q == four_bit.end()) {
      params += t.numel();
      continue;
    }
    params += 2 * t.numel();  // as num_parameters() counts packed codes
    for (const auto& [k, s] : quant::quant_state_to_tensors(q->second->state, name))
      bytes += static_cast<int64_t>(s.nbytes());
  }
  for (const auto& [kind, n] : kinds) std::cout << "4-bit layers: " << n << " (" << kind << ")\n";
  char per[32];
  std::snprintf(per, sizeof per, "%.3f", params ? static_cast<double>(bytes) / static_cast<double>(params) : 0.0);
  std::cout << "bytes per parameter: " << per << " (" << with_commas(bytes) << " bytes, quantization state included)\n";
}

void inspect(const ModelArgs& args, const std::string& method) {
  auto model = args.load();
  if (!method.empty()) return inspect_method(model, method);
  std::cout << "architecture: " << model->type_name() << "\n"
            << "task:         " << (as_seq2seq(*model)       ? "seq2seq-lm"
                               : as_contrastive(*model) ? "contrastive-image-text"
                                                        : task_kind_name(model->task())) << "\n";
  // Group parameters by the class of the module that owns them, and by dtype.
  std::map<std::pair<std::string, std::string>, std::pair<int64_t, int64_t>> groups;  // -> (tensors, elements)
  for (const auto& [name, t] : model->named_parameters()) {
    auto dot = name.rfind('.');
    Module* owner = dot == std::string::npos ? model.get() : model->find(name.substr(0, dot));
    auto& g = groups[{owner ? owner->type_name() : "?", std::string(c10::toString(t.scalar_type()))}];
    g.first += 1;
    g.second += t.scalar_type() == at::kByte ? 2 * t.numel() : t.numel();  // 4-bit codes: two per byte
  }
  std::printf("%-28s %-10s %8s %14s\n", "module type", "dtype", "tensors", "parameters");
  for (const auto& [key, g] : groups)
    std::printf("%-28s %-10s %8lld %14s\n", key.first.c_str(), key.second.c_str(), static_cast<long long>(g.first),
                with_commas(g.second).c_str());
  std::cout << "total parameters: " << with_commas(model->num_parameters()) << " (" << model->num_parameters()
            << ")\n";
  inspect_4bit(*model);
}

}  // namespace

void inspect_adapter(const std::string& dir);

void register_inspect(CLI::App& app) {
  auto* cmd = app.add_subcommand("inspect",
                                 "Show a model's architecture and parameter counts, or, for an adapter folder, "
                                 "its method, rank, targets, size and base model");
  cmd->footer("Examples:\n  peft inspect ./SmolLM2-135M\n  peft inspect out/adapter\n"
              "  peft inspect ./SmolLM2-135M --method '{\"r\": 16, \"target_modules\": \"all-linear\"}'");
  auto args = std::make_shared<ModelArgs>();
  args->add_to(cmd);
  auto method = std::make_shared<std::string>();
  cmd->add_option("--method", *method,
                  "Adapter config (JSON text, or a JSON or YAML file, adapter_config.json fields, e.g. "
                  "'{\"peft_type\": \"IA3\"}'): print what it would train on the model, in HF PEFT's format");
  cmd->callback([args, method] {
    if (std::filesystem::exists(std::filesystem::path(args->dir) / "adapter_config.json"))
      inspect_adapter(args->dir);
    else
      inspect(*args, *method);
  });
}

}  // namespace peft::cli
