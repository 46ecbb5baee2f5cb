// Where RandLoRA goes and what it shares (HF PEFT's RandLoraModel): the targets, the bases
// sized to the largest of them and drawn from projection_prng_key, one RandLoraLayer each.
#include <ATen/ATen.h>

#include <cmath>

#include "peft/layers.h"
#include "peft/randlora.h"
#include "tuners/config_fields.h"
#include "tuners/injection.h"
#include "tuners/target_match.h"

namespace peft {

namespace {

// torch.nn.init.kaiming_uniform_(t, a=sqrt(5), generator=gen) on a new bf16 tensor (HF's
// _kaiming_init when bf16 is available, as it is on CPUs and current GPUs), with the bound
// computed in the same double steps as torch's calculate_gain, so the values are HF's bit
// for bit. fan_in of a [d0, d1, d2...] tensor is d1 * d2 * ...
at::Tensor hf_kaiming_uniform_bf16(std::vector<int64_t> shape, at::Generator& gen) {
  int64_t fan_in = 1;
  for (size_t i = 1; i < shape.size(); ++i) fan_in *= shape[i];
  const double a = std::sqrt(5.0);
  const double gain = std::sqrt(2.0 / (1 + std::pow(a, 2.0)));
  const double std = gain / std::sqrt(static_cast<double>(fan_in));
  const double bound = std::sqrt(3.0) * std;
  return at::empty(shape, at::TensorOptions(at::kBFloat16)).uniform_(-bound, bound, gen);
}

// HF's _init_randlora_A_randlora_B_sparse: -1 below 1/(2s), 1 above 1 - 1/(2s), else 0.
at::Tensor ternary(const at::Tensor& u, double sparsity) {
  auto t = at::zeros(u.sizes(), at::kFloat);
  t.masked_fill_(at::lt(u, 1 / (2 * sparsity)), -1);
  t.masked_fill_(at::gt(u, 1 - 1 / (2 * sparsity)), 1);
  return t;
}

}  // namespace

int64_t randlora_num_bases(int64_t in, int64_t out, int64_t r) { return (std::min(in, out) + r - 1) / r; }

RandLoraBases make_randlora_bases(int64_t r, int64_t max_out, int64_t max_in, uint64_t key, RandLoraBasis kind) {
  const int64_t max_dim = std::max(max_out, max_in), min_dim = std::min(max_out, max_in);
  const int64_t n = randlora_num_bases(max_in, max_out, r);
  auto gen = at::detail::createCPUGenerator(key);
  RandLoraBases b;
  if (kind == RandLoraBasis::kDense) {
    auto A = hf_kaiming_uniform_bf16({r, 1, min_dim}, gen);  // first, as HF draws them
    std::vector<at::Tensor> slices;
    for (int64_t i = 0; i < n; ++i) slices.push_back(hf_kaiming_uniform_bf16({max_dim, 1, r}, gen));
    auto B = at::cat(slices, 1);
    // Normalized in bf16, then cast to the (fp32) model's dtype, as HF's layers do.
    b.A = (A / A.std()).to(at::kFloat);
    b.B = (B / B.std()).to(at::kFloat);
  } else {
    const double sparsity = kind == RandLoraBasis::kSparse ? 3.0 : std::sqrt(static_cast<double>(min_dim));
    const auto A = ternary(at::rand({r, 1, min_dim}, gen, at::TensorOptions(at::kFloat)), sparsity);
    const auto B = ternary(at::rand({max_dim, n, r}, gen, at::TensorOptions(at::kFloat)), sparsity);
    b.A = A / A.std();
    b.B = B / B.std();
  }
  return b;
}

void RandLoraConfig::resolve(const Model& model) {
  if (targets.empty()) targets.target_list = default_targets(model, "RANDLORA", lora_default_targets());
}

NamedModules RandLoraConfig::layer_targets(Model& model) const {
  auto found = find_targets(model, targets, task_type);
  // HF's _find_dim: the largest out and in over the targets, each on its own.
  int64_t max_out = 0, max_in = 0;
  for (auto& [path, m] : found) {
    auto* l = &linear_host("RANDLORA", path, *m, LinearHost::kLinearOrConv1D);
    max_out = std::max(max_out, l->output_dim());
    max_in = std::max(max_in, l->input_dim());
  }
  if (found.empty()) {
    bases_.reset();
    return found;
  }
  bases_ = std::make_shared<RandLoraBases>(make_randlora_bases(r, max_out, max_in, projection_prng_key, basis()));
  bases_->saved = save_projection;
  bases_->A = bases_->A.to(model.device());
  bases_->B = bases_->B.to(model.device());
  return found;
}

std::shared_ptr<LayerAdapter> RandLoraConfig::make_layer_adapter(const std::string& path, Module& m,
                                                                at::Generator& gen) const {
  auto* host = &linear_host("RANDLORA", path, m, LinearHost::kLinearOrConv1D);
  const int64_t in = host->input_dim(), out = host->output_dim();
  const int64_t min_dim = std::min(in, out), max_dim = std::max(in, out), n = randlora_num_bases(in, out, r);
  if (!bases_ || bases_->A.size(2) < min_dim || bases_->B.size(0) < max_dim || bases_->B.size(1) < n)
    throw std::logic_error("RANDLORA: the bases are not sized for '" + path + "' (layer_targets makes them)");
  auto a = std::make_shared<RandLoraLayer>(host, bases_, r, randlora_alpha / static_cast<double>(r), randlora_dropout,
                                           key_prefix() + path + ".");
  if (init_weights) {
    // HF's reset_randlora_parameters: lambda 0 (the base model), gamma 1 / max(gamma's shape).
    a->gamma.fill_(1.0 / static_cast<double>(std::max(n, min_dim)));
  } else {
    a->lambda = at::randn({r, n}, gen, at::TensorOptions(at::kFloat));
    a->gamma = at::ones({n, min_dim}, at::kFloat) / max_dim;
  }
  a->to(host->weight_tensor()->device());
  return a;
}

std::vector<std::string> RandLoraConfig::trained_base_parameters(Model& model, const std::set<std::string>& adapted) const {
  return bias_parameters(model, bias, ".randlora_", adapted);
}

}  // namespace peft
