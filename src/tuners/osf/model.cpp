// Where OSF goes (HF PEFT's OSFModel): Linear targets, HF's OSF table of default targets
// (else "all-linear"), the preserved rank per module (effective_rank, rank_pattern).
#include <ATen/ATen.h>

#include <algorithm>
#include <stdexcept>

#include "peft/osf.h"
#include "tuners/config_fields.h"
#include "tuners/injection.h"
#include "tuners/target_match.h"
#include "util/regex.h"

namespace peft {

namespace {

// TRANSFORMERS_MODELS_TO_OSF_TARGET_MODULES_MAPPING (HF PEFT 0.21).
const DefaultTargets& osf_default_targets() {
  static const std::vector<std::string> dense = {"q_proj", "k_proj", "v_proj", "o_proj",
                                                 "gate_proj", "down_proj", "up_proj"};
  static const DefaultTargets table = {
      {"llama", dense}, {"llama4", dense}, {"mistral", dense}, {"mixtral", dense}, {"gemma", dense},
      {"gemma2", dense}, {"gemma3_text", dense}, {"qwen2", dense}, {"qwen3", dense}, {"phi", dense},
      {"gpt2", {"c_attn", "c_proj"}},
      {"bloom", {"query_key_value", "dense_4h_to_h"}},
      {"opt", {"q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"}},
      {"gptj", {"q_proj", "k_proj", "v_proj", "out_proj", "fc_in", "fc_out"}},
      {"gpt_neox", {"query_key_value", "dense_4h_to_h"}},
      {"falcon", {"query_key_value", "dense_4h_to_h"}},
      {"gpt_bigcode", {"c_attn", "c_proj"}},
  };
  return table;
}

}  // namespace

void OsfConfig::resolve(const Model& model) {
  if (!targets.empty()) return;
  const std::string type = model.config().value("model_type", std::string());
  for (const auto& [t, names] : osf_default_targets())
    if (t == type) {
      targets.target_list = names;
      return;
    }
  targets.target_regex = "all-linear";  // HF's fallback for a model type not in its table
}

NamedModules OsfConfig::layer_targets(Model& model) const { return find_targets(model, targets, task_type); }

int64_t OsfConfig::rank_for(const std::string& path, int64_t min_dim) const {
  int64_t k = effective_rank ? effective_rank->resolve(min_dim) : std::max<int64_t>(min_dim / 2, 0);
  for (const auto& [p, v] : rank_pattern)
    if (!Regex(p).find_all(path).empty()) {  // re.search, first pattern in file order
      k = v.resolve(min_dim);
      break;
    }
  if (k <= 0)
    throw std::invalid_argument("OSF: the effective_rank of '" + path + "' resolves to " + std::to_string(k) +
                                " (its smaller dimension is " + std::to_string(min_dim) +
                                "); it must be at least 1");
  return k;
}

std::shared_ptr<LayerAdapter> OsfConfig::make_layer_adapter(const std::string& path, Module& m,
                                                           at::Generator& gen) const {
  // HF's dispatch takes nn.Linear only and silently leaves other targets (GPT-2's Conv1D)
  // alone; an adapter that adapts nothing is refused here instead.
  auto* host = &linear_host("OSF", path, m, LinearHost::kLinear);
  const int64_t k = rank_for(path, std::min(host->input_dim(), host->output_dim()));
  auto a = std::make_shared<OsfLayer>(host, k);
  if (!init_weights) {  // torch.randn_like for each trainable factor; the frozen ⁰ factors stay
    const auto f32 = at::TensorOptions(at::kFloat);
    a->U_low = at::empty(a->U_low.sizes(), f32).normal_(0, 1, gen);
    a->S_low = at::empty(a->S_low.sizes(), f32).normal_(0, 1, gen);
    a->V_low = at::empty(a->V_low.sizes(), f32).normal_(0, 1, gen);
    a->to(host->weight_tensor()->device());
  }
  return a;
}

}  // namespace peft
