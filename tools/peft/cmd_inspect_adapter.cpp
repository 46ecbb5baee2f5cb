// peft inspect ADAPTER_DIR: what an adapter folder holds.
#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <tuple>

#include "common.h"
#include "peft/safetensors.h"
#include "util/json_file.h"

namespace fs = std::filesystem;

namespace peft::cli {

void inspect_adapter(const std::string& dir) {
  const auto cfg_path = fs::path(dir) / "adapter_config.json";
  const nlohmann::ordered_json j = read_ordered_json_file(cfg_path.string());
  auto cfg = parse_adapter_config(j, cfg_path.string());  // validates before anything is printed
  const std::string type = cfg->peft_type();
  std::cout << "method:     " << type << "\n";
  if (type == "LORA") {
    auto c = LoraConfig::from_json(j, cfg_path.string());
    std::string variant = c.use_dora ? "DoRA" : c.use_rslora ? "rsLoRA" : "LoRA";
    std::cout << "variant:    " << variant << "\n"
              << "rank:       " << c.r << " (alpha " << c.lora_alpha << ")";
    for (const auto& [k, v] : c.rank_pattern) std::cout << ", " << k << ": r=" << v;
    std::cout << "\ntargets:    " << quote_json(c.to_json()["target_modules"], 400) << "\n";
    if (!c.targets.modules_to_save.empty())
      std::cout << "saved:      " << quote_json(c.to_json()["modules_to_save"], 400) << "\n";
  } else {
    // The method's own settings: every field that is set, minus the bookkeeping ones.
    static const std::set<std::string> kSkip = {"peft_type", "task_type", "base_model_name_or_path", "inference_mode",
                                                "peft_version", "revision", "auto_mapping"};
    const auto fields = cfg->to_json();  // bound: items() of a temporary would dangle
    std::cout << "settings:\n";
    for (const auto& [k, v] : fields.items())
      if (!v.is_null() && !kSkip.count(k)) std::cout << "  " << k << ": " << quote_json(v, 200) << "\n";
  }
  std::cout << "task:       " << (cfg->task_type.empty() ? "-" : cfg->task_type) << "\n"
            << "base model: " << (cfg->base_model_name_or_path.empty() ? "-" : cfg->base_model_name_or_path) << "\n";
  SafetensorsFile f((fs::path(dir) / "adapter_model.safetensors").string());
  // HF writes a tied module's trainable values under both names (the token rows of a tied
  // embedding and lm_head; LILY's shared factors): a non-zero tensor equal to an earlier one
  // of its dtype and shape is a copy, counted apart.
  int64_t n = 0, copies = 0;
  // Candidates by dtype, shape and two sums; equal tensors are then compared in full.
  std::map<std::tuple<int, std::vector<int64_t>, double, double>, std::vector<std::string>> seen;
  for (const auto& t : f.header().tensors) {
    int64_t e = 1;
    for (auto d : t.shape) e *= d;
    const at::Tensor values = f.get(t.name);
    const at::Tensor wide = values.to(at::kDouble);
    const auto sum = [](const at::Tensor& x) {  // NaN would break the map's ordering
      const double v = x.sum().item<double>();
      return std::isnan(v) ? 0.0 : v;
    };
    const double magnitude = sum(wide.abs());
    auto& same = seen[{static_cast<int>(t.dtype), t.shape, sum(wide), magnitude}];
    // All-zero tensors are equal without being copies (GLoRA's zero buffers, B at init).
    const bool copy = magnitude != 0.0 && std::any_of(same.begin(), same.end(), [&](const std::string& k) {
      return at::equal(f.get(k), values);
    });
    (copy ? copies : n) += e;
    same.push_back(t.name);
  }
  std::cout << "tensors:    " << f.header().tensors.size() << "\n"
            << "parameters: " << n;
  if (copies > 0) std::cout << " (and " << copies << " more in tied copies)";
  std::cout << "\n";
}

}  // namespace peft::cli
