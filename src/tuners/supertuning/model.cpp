// Where Super-Tuning goes (HF PEFT's SupertuningModel): Linear targets only (HF refuses the
// rest), LoRA's default table, each layer's support chosen by |W| as HF's update_layer.
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <stdexcept>

#include "peft/layers.h"
#include "peft/supertuning.h"
#include "tuners/config_fields.h"
#include "tuners/init_draws.h"
#include "tuners/injection.h"
#include "tuners/target_match.h"

namespace peft {

void SupertuningConfig::resolve(const Model& model) {
  if (targets.empty()) targets.target_list = default_targets(model, "SUPERTUNING", lora_default_targets());
}

NamedModules SupertuningConfig::layer_targets(Model& model) const { return find_targets(model, targets, task_type); }

std::shared_ptr<LayerAdapter> SupertuningConfig::make_layer_adapter(const std::string& path, Module& m,
                                                                   at::Generator& gen) const {
  auto* host = &linear_host("SUPERTUNING", path, m);
  // HF's _check_new_adapter_config: the indices are filed for all adapters or none.
  for (const auto& other : host->adapter_names())
    if (auto* st = dynamic_cast<SupertuningLayer*>(host->adapter(other));
        st && st->files_indices() != save_precomputed_indices)
      throw std::invalid_argument("SUPERTUNING: indices must be saved for all adapters or none, but adapter '" +
                                  other + "' differs in save_precomputed_indices");
  const int64_t in = host->input_dim(), out = host->output_dim();
  // int(num_params * (1 - sparsity)), in Python's double arithmetic.
  const auto n = static_cast<int64_t>(static_cast<double>(out * in) * (1.0 - sparsity));
  if (n < 1)
    throw std::invalid_argument("SUPERTUNING: sparsity=" + std::to_string(sparsity) +
                                " leaves no trainable entries for '" + path + "' (" + std::to_string(out * in) +
                                " weights); lower the sparsity");
  at::Tensor indices;
  {
    c10::NoGradGuard no_grad;
    at::Tensor w = host->dense_weight();
    if (host->weight_is_in_out()) w = w.t();
    const auto scores = w.abs().flatten().cpu();
    indices = std::get<1>(at::topk(scores, n, 0, /*largest=*/select_top)).to(at::kInt).contiguous();
  }
  const int64_t rank = r.value_or(0);
  auto a = std::make_shared<SupertuningLayer>(host, indices,
                                              save_precomputed_indices ? key_prefix() + path + ".supertuning_indices"
                                                                       : std::string(),
                                              rank, lora_alpha.value_or(0.0), lora_dropout);
  const auto f32 = at::TensorOptions(at::kFloat);
  if (!init_weights) a->values = at::randn({n}, gen, f32);
  if (rank > 0) {
    a->lora_A = kaiming_uniform_sqrt5(rank, in, gen);  // both inits (HF's nn.init.kaiming_uniform_)
    a->lora_B = init_weights ? at::zeros({out, rank}, f32) : kaiming_uniform_sqrt5(out, rank, gen);
  }
  a->to(host->weight_tensor()->device());
  return a;
}

}  // namespace peft
