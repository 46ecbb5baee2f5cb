// Where Poly goes (HF PEFT's PolyModel): Linear targets, one PolyLayer each, HF's inits.
#include <ATen/ATen.h>

#include <cmath>

#include "peft/poly.h"
#include "tuners/config_fields.h"
#include "tuners/injection.h"
#include "tuners/target_match.h"

namespace peft {

namespace {

// HF's reset_poly_parameters: every [split, skill] block is kaiming_uniform_(a=sqrt(5)) of
// a [rows, cols] matrix, transposed: U(-1/sqrt(cols), 1/sqrt(cols)).
at::Tensor kaiming_blocks(int64_t splits, int64_t skills, int64_t rows, int64_t cols, at::Generator& gen) {
  const double bound = 1.0 / std::sqrt(static_cast<double>(cols));
  auto out = at::empty({splits, skills, cols, rows}, at::kFloat);
  for (int64_t skill = 0; skill < skills; ++skill)
    for (int64_t split = 0; split < splits; ++split)
      out[split][skill].copy_(
          at::empty({rows, cols}, at::TensorOptions(at::kFloat)).uniform_(-bound, bound, gen).t());
  return out;
}

}  // namespace

void PolyConfig::resolve(const Model& model) {
  if (targets.empty()) targets.target_list = default_targets(model, "POLY", lora_default_targets());
}

NamedModules PolyConfig::layer_targets(Model& model) const { return find_targets(model, targets, task_type); }

std::shared_ptr<LayerAdapter> PolyConfig::make_layer_adapter(const std::string& path, Module& m,
                                                            at::Generator& gen) const {
  auto* host = &linear_host("POLY", path, m);
  const int64_t in = host->input_dim(), out = host->output_dim();
  if (in % n_splits != 0 || out % n_splits != 0)
    throw std::invalid_argument("POLY: n_splits " + std::to_string(n_splits) + " must divide the features of '" +
                                path + "' (" + std::to_string(in) + " in, " + std::to_string(out) + " out)");
  auto a = std::make_shared<PolyLayer>(host, *this);
  a->lora_A = kaiming_blocks(n_splits, n_skills, r, in / n_splits, gen);
  a->lora_B = init_weights ? at::zeros({n_splits, n_skills, r, out / n_splits}, at::kFloat)
                           : kaiming_blocks(n_splits, n_skills, out / n_splits, r, gen);
  a->module_logits = at::empty({n_tasks, n_splits * n_skills}, at::kFloat).uniform_(-1e-3, 1e-3, gen);
  a->to(host->weight_tensor()->device());
  return a;
}

}  // namespace peft
