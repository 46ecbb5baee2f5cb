// Where SHiRA goes (HF PEFT's ShiraModel): the targets (Linear layers only, as HF), each
// layer's positions from the mask function, one ShiraLayer each.
#include <ATen/ATen.h>

#include "peft/layers.h"
#include "peft/shira.h"
#include "tuners/config_fields.h"
#include "tuners/injection.h"
#include "tuners/target_match.h"

namespace peft {

void ShiraConfig::resolve(const Model& model) {
  if (targets.empty()) targets.target_list = default_targets(model, "SHIRA", lora_default_targets({{"phi", {"q_proj", "v_proj"}}}));
}

NamedModules ShiraConfig::layer_targets(Model& model) const { return find_targets(model, targets, task_type); }

std::shared_ptr<LayerAdapter> ShiraConfig::make_layer_adapter(const std::string& path, Module& m,
                                                             at::Generator& gen) const {
  auto* host = &linear_host("SHIRA", path, m);
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
