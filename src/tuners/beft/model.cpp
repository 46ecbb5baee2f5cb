// Where BEFT goes (HF PEFT's BeftModel): Linear targets, HF's BEFT target table.
#include <ATen/ATen.h>

#include "peft/beft.h"
#include "tuners/config_fields.h"
#include "tuners/injection.h"
#include "tuners/target_match.h"

namespace peft {

namespace {

// HF PEFT 0.21's TRANSFORMERS_MODELS_TO_BEFT_TARGET_MODULES_MAPPING.
const DefaultTargets& beft_default_targets() {
  static const DefaultTargets table = {
      {"t5", {"v"}},           {"mt5", {"v"}},          {"roberta", {"value"}},  {"opt", {"v_proj"}},
      {"gptj", {"v_proj"}},    {"gpt_neo", {"v_proj"}}, {"bart", {"v_proj"}},    {"llama", {"v_proj"}},
      {"llama4", {"v_proj"}},  {"mistral", {"v_proj"}}, {"mixtral", {"v_proj"}}, {"bert", {"value"}},
      {"deberta-v2", {"value_proj"}}, {"phi", {"v_proj"}}, {"gemma", {"v_proj"}}, {"gemma2", {"v_proj"}},
      {"gemma3_text", {"v_proj"}}, {"qwen2", {"v_proj"}}, {"qwen3", {"v_proj"}}};
  return table;
}

}  // namespace

void BeftConfig::resolve(const Model& model) {
  if (targets.empty()) targets.target_list = default_targets(model, "BEFT", beft_default_targets());
}

NamedModules BeftConfig::layer_targets(Model& model) const { return find_targets(model, targets, task_type); }

std::shared_ptr<LayerAdapter> BeftConfig::make_layer_adapter(const std::string& path, Module& m,
                                                            at::Generator& gen) const {
  auto* host = &linear_host("BEFT", path, m);
  auto a = std::make_shared<BeftLayer>(host);
  // HF draws torch.randn((1, out)) and zeroes it when init_weights.
  const auto drawn = at::randn(a->bias.sizes(), gen, at::TensorOptions(at::kFloat));
  a->bias = init_weights ? at::zeros_like(drawn) : drawn;
  a->to(host->weight_tensor()->device());
  return a;
}

}  // namespace peft
