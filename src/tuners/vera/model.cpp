// Where VeRA goes and what it shares (HF PEFT's VeraModel): the targets, the projection
// sized to the largest of them and drawn from projection_prng_key (PVeRA's too), one
// VeraLayer each.
#include <ATen/ATen.h>

#include <cmath>

#include "peft/layers.h"
#include "peft/vera.h"
#include "tuners/config_fields.h"
#include "tuners/injection.h"
#include "tuners/target_match.h"
#include "tuners/vera/projection.h"

namespace peft {

namespace {

// peft.tuners.vera.model._kaiming_init: uniform_(-bound, bound, generator) with the
// bound computed in the same double steps, so the floats come out bit for bit.
at::Tensor hf_kaiming_uniform(std::vector<int64_t> shape, at::Generator& gen) {
  const double fan_in = static_cast<double>(shape[1]);
  const double std = std::sqrt(2.0) / std::sqrt(fan_in);
  const double bound = std::sqrt(3.0) * std;
  return at::empty(shape, at::TensorOptions(at::kFloat)).uniform_(-bound, bound, gen);
}

}  // namespace

VeraProjection draw_shared_projection(int64_t a_rows, int64_t b_cols, int64_t max_out, int64_t max_in, uint64_t key) {
  auto gen = at::detail::createCPUGenerator(key);
  VeraProjection p;
  p.A = hf_kaiming_uniform({a_rows, max_in}, gen);  // first, as HF draws them
  p.B = hf_kaiming_uniform({max_out, b_cols}, gen);
  return p;
}

VeraProjection make_vera_projection(int64_t r, int64_t max_out, int64_t max_in, uint64_t key) {
  return draw_shared_projection(r, r, max_out, max_in, key);
}

std::shared_ptr<VeraProjection> projection_for_targets(const char* method, const NamedModules& targets,
                                                       int64_t a_rows, int64_t b_cols, uint64_t key, bool saved,
                                                       at::Device device) {
  // HF's _find_dim: the largest out and in over the targets, each on its own.
  int64_t max_out = 0, max_in = 0;
  for (auto& [path, m] : targets) {
    auto* l = &linear_host(method, path, *m, LinearHost::kLinearOrConv1D);
    max_out = std::max(max_out, l->output_dim());
    max_in = std::max(max_in, l->input_dim());
  }
  auto p = std::make_shared<VeraProjection>(draw_shared_projection(a_rows, b_cols, max_out, max_in, key));
  p->saved = saved;
  p->A = p->A.to(device);
  p->B = p->B.to(device);
  return p;
}

void VeraConfig::resolve(const Model& model) {
  if (targets.empty()) targets.target_list = default_targets(model, "VERA", lora_default_targets({{"phi", {"q_proj", "v_proj"}}}));
}

NamedModules VeraConfig::layer_targets(Model& model) const {
  auto found = find_targets(model, targets, task_type);
  projection_ = projection_for_targets("VERA", found, r, r, projection_prng_key, save_projection, model.device());
  return found;
}

std::shared_ptr<LayerAdapter> VeraConfig::make_layer_adapter(const std::string& path, Module& m,
                                                            at::Generator& gen) const {
  auto* host = &linear_host("VERA", path, m, LinearHost::kLinearOrConv1D);
  if (!projection_ || projection_->A.size(1) < host->input_dim() || projection_->B.size(0) < host->output_dim())
    throw std::logic_error("VERA: the projection is not sized for '" + path + "' (layer_targets makes it)");
  auto a = std::make_shared<VeraLayer>(host, projection_, r, vera_dropout);
  if (init_weights) {
    a->lambda_d.fill_(d_initial);  // lambda_b stays 0: the adapted model starts as the base
  } else {
    a->lambda_d = at::randn({r}, gen, at::TensorOptions(at::kFloat));
    a->lambda_b.fill_(1.0);
  }
  a->to(host->weight_tensor()->device());
  return a;
}

std::vector<std::string> VeraConfig::trained_base_parameters(Model& model, const std::set<std::string>& adapted) const {
  return bias_parameters(model, bias, ".vera_lambda_", adapted);
}

}  // namespace peft
