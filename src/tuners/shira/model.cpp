// Where SHiRA goes (HF PEFT's ShiraModel): the targets (Linear layers only, as HF), each
// layer's positions from the mask function, one ShiraLayer each.
#include <ATen/ATen.h>

#include "peft/layers.h"
#include "peft/shira.h"
#include "tuners/config_fields.h"
#include "tuners/target_match.h"

namespace peft {

namespace {

// HF's TRANSFORMERS_MODELS_TO_SHIRA_TARGET_MODULES_MAPPING (LoRA's table) for our models.
const std::vector<std::pair<std::string, std::vector<std::string>>> kDefaultTargets = {
    {"llama", {"q_proj", "v_proj"}}, {"mistral", {"q_proj", "v_proj"}}, {"qwen2", {"q_proj", "v_proj"}},
    {"qwen3", {"q_proj", "v_proj"}}, {"gemma2", {"q_proj", "v_proj"}}, {"gemma3_text", {"q_proj", "v_proj"}},
    {"gpt2", {"c_attn"}},            {"bert", {"query", "value"}},
    {"roberta", {"query", "value"}}};

}  // namespace

void ShiraConfig::resolve(const Model& model) {
  if (targets.empty()) targets.target_list = default_targets(model, "SHIRA", kDefaultTargets);
}

NamedModules ShiraConfig::layer_targets(Model& model) const { return find_targets(model, targets, task_type); }

std::shared_ptr<LayerAdapter> ShiraConfig::make_layer_adapter(const std::string& path, Module& m,
                                                             at::Generator& gen) const {
  auto* host = dynamic_cast<AdaptableLayer*>(&m);
  // HF's _create_new_module: nn.Linear only (GPT-2's Conv1D is refused there too).
  if (!host || host->kind() != LayerKind::kLinear || !host->weight_tensor() || host->weight_is_in_out())
    throw std::invalid_argument("SHIRA: target module '" + path + "' is a " + m.type_name() +
                                "; only Linear layers are supported");
  const int64_t in = host->input_dim(), out = host->output_dim(), n = r * (in + out);
  if (n > in * out)
    throw std::invalid_argument("SHIRA: r " + std::to_string(r) + " gives " + std::to_string(n) +
                                " SHiRA weights for '" + path + "', more than its " + std::to_string(in * out));
  // Another mask_type has no mask function here (HF: a user's config.mask_fn); its
  // positions stay unknown (-1) until an adapter file supplies them.
  at::Tensor indices = mask_type == "random" ? shira_random_indices(out, in, n, random_seed)
                                             : at::full({2, n}, -1, at::TensorOptions(at::kInt));
  auto a = std::make_shared<ShiraLayer>(host, indices, key_prefix() + path + ".shira_indices");
  if (!init_weights) a->weight = at::randn({n}, gen, at::TensorOptions(at::kFloat));
  a->to(host->weight_tensor()->device());
  return a;
}

}  // namespace peft
