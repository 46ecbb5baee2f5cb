// peft inspect ADAPTER_DIR: what an adapter folder holds.
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>

#include "common.h"
#include "peft/safetensors.h"

namespace fs = std::filesystem;

namespace peft::cli {

void inspect_adapter(const std::string& dir) {
  const auto cfg_path = fs::path(dir) / "adapter_config.json";
  std::ifstream in(cfg_path);
  nlohmann::ordered_json j;
  try {
    j = nlohmann::ordered_json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(cfg_path.string() + ": invalid JSON: " + e.what());
  }
  const std::string type = j.value("peft_type", std::string("?"));
  std::cout << "method:     " << type << "\n";
  if (type == "LORA") {
    auto c = LoraConfig::from_json(j, cfg_path.string());
    std::string variant = c.use_dora ? "DoRA" : c.use_rslora ? "rsLoRA" : "LoRA";
    std::cout << "variant:    " << variant << "\n"
              << "rank:       " << c.r << " (alpha " << c.lora_alpha << ")";
    for (const auto& [k, v] : c.rank_pattern) std::cout << ", " << k << ": r=" << v;
    std::cout << "\ntargets:    " << j["target_modules"].dump() << "\n";
    if (!c.targets.modules_to_save.empty()) std::cout << "saved:      " << j["modules_to_save"].dump() << "\n";
  } else {
    // The method's own settings: every field that is set, minus the bookkeeping ones.
    auto cfg = parse_adapter_config(j, cfg_path.string());
    static const std::set<std::string> kSkip = {"peft_type", "task_type", "base_model_name_or_path", "inference_mode",
                                                "peft_version", "revision", "auto_mapping"};
    const auto fields = cfg->to_json();  // bound: items() of a temporary would dangle
    std::cout << "settings:\n";
    for (const auto& [k, v] : fields.items())
      if (!v.is_null() && !kSkip.count(k)) std::cout << "  " << k << ": " << v.dump() << "\n";
  }
  std::cout << "task:       " << (j["task_type"].is_string() ? j["task_type"].get<std::string>() : "-") << "\n"
            << "base model: "
            << (j["base_model_name_or_path"].is_string() ? j["base_model_name_or_path"].get<std::string>() : "-") << "\n";
  SafetensorsFile f((fs::path(dir) / "adapter_model.safetensors").string());
  int64_t n = 0;
  for (const auto& t : f.header().tensors) {
    int64_t e = 1;
    for (auto d : t.shape) e *= d;
    n += e;
  }
  std::cout << "tensors:    " << f.header().tensors.size() << "\n"
            << "parameters: " << n << "\n";
}

}  // namespace peft::cli
