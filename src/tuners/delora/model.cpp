// Where DeLoRA goes (HF PEFT's DeloraModel): Linear targets, LoRA's default table, the
// per-module rank and λ, HF's inits.
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <cmath>

#include "peft/delora.h"
#include "tuners/config_fields.h"
#include "tuners/init_draws.h"
#include "tuners/injection.h"
#include "tuners/pattern_key.h"
#include "tuners/target_match.h"

namespace peft {

void DeloraConfig::resolve(const Model& model) {
  if (targets.empty()) targets.target_list = default_targets(model, "DELORA", lora_default_targets());
}

NamedModules DeloraConfig::layer_targets(Model& model) const { return find_targets(model, targets, task_type); }

std::shared_ptr<LayerAdapter> DeloraConfig::make_layer_adapter(const std::string& path, Module& m,
                                                              at::Generator& gen) const {
  auto* host = &linear_host("DELORA", path, m);
  const int64_t* rp = pattern_value(rank_pattern, path);
  const double* lp = pattern_value(lambda_pattern, path);
  const int64_t rank = rp ? *rp : r;
  auto a = std::make_shared<DeloraLayer>(host, rank, module_dropout, key_prefix() + path + ".delora_w_norm");
  const int64_t in = host->input_dim(), out = host->output_dim();
  a->A = kaiming_uniform_sqrt5(rank, in, gen);
  a->B = init_weights ? at::zeros({out, rank}, at::kFloat) : kaiming_uniform_sqrt5(out, rank, gen);
  a->lambda = at::full({1}, lp ? *lp : delora_lambda, at::kFloat);
  {
    c10::NoGradGuard no_grad;  // HF: torch.norm(W, dim=0), the input columns' norms
    a->w_norm = host->dense_weight().to(at::kFloat).norm(2, {0}).contiguous();
  }
  a->to(host->weight_tensor()->device());
  return a;
}

std::vector<std::string> DeloraConfig::trained_base_parameters(Model& model,
                                                               const std::set<std::string>& adapted) const {
  return bias_parameters(model, bias, ".delora_", adapted);
}

}  // namespace peft
