// Where ADAMSS goes (HF PEFT 0.21's AdamssModel): nn.Linear targets (HF refuses others),
// LoRA's table of default targets plus ViT's query and value; ASA training refused.
#include <ATen/ATen.h>

#include <stdexcept>

#include "peft/adamss.h"
#include "tuners/config_fields.h"
#include "tuners/injection.h"
#include "tuners/target_match.h"

namespace peft {

void AdamssConfig::resolve(const Model& model) {
  if (targets.empty())
    targets.target_list = default_targets(model, "ADAMSS", lora_default_targets({{"vit", {"query", "value"}}}));
}

NamedModules AdamssConfig::layer_targets(Model& model) const { return find_targets(model, targets, task_type); }

std::shared_ptr<LayerAdapter> AdamssConfig::make_layer_adapter(const std::string& path, Module& m,
                                                              at::Generator& gen) const {
  auto* host = &linear_host("ADAMSS", path, m, LinearHost::kLinear);
  return std::make_shared<AdamssLayer>(host, *this, gen, key_prefix() + path + ".");
}

// HF's ASA lives in AdamssAsaCallback / update_and_allocate (per-step importance EMAs of
// |w·g|, a global top-k of subspaces whose requires_grad it switches off); none of it is
// filed, so an ASA adapter loads and runs as any other, but training one here would
// silently train every subspace.
void AdamssConfig::begin_training(int64_t) {
  if (use_asa)
    throw std::invalid_argument("ADAMSS: 'use_asa' true (adaptive subspace allocation during training) is not supported yet");
}

}  // namespace peft
