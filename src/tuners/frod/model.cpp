// Where FRoD goes and what its layers share (HF PEFT 0.21's FrodModel): the targets, one
// projection per role (V from the role's stacked weights, S's positions from
// projection_prng_key), one FrodLayer each with U and lambda_l from its own weight.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <cctype>
#include <map>
#include <set>

#include "peft/frod.h"
#include "tuners/config_fields.h"
#include "tuners/injection.h"
#include "tuners/target_match.h"

namespace peft {

namespace {

std::vector<std::string> split_dots(const std::string& s) {
  std::vector<std::string> parts;
  size_t start = 0;
  for (size_t dot; (dot = s.find('.', start)) != std::string::npos; start = dot + 1) parts.push_back(s.substr(start, dot - start));
  parts.push_back(s.substr(start));
  return parts;
}

bool all_digits(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); });
}

// S's positions: nnz of the in² − in off-diagonal positions (row-major), HF's
// randperm(non_diag_count, generator)[:nnz], as [2, nnz].
at::Tensor draw_positions(int64_t in, double sparse_rate, at::Generator& gen) {
  const int64_t off_diag = in * (in - 1);
  int64_t nnz = std::min(static_cast<int64_t>(static_cast<double>(in * in) * sparse_rate), off_diag);
  if (sparse_rate > 0 && off_diag > 0) nnz = std::max<int64_t>(1, nnz);
  if (nnz == 0) return at::empty({2, 0}, at::kLong);
  const auto k = at::randperm(off_diag, gen, at::TensorOptions(at::kLong)).narrow(0, 0, nnz);
  const auto rows = at::div(k, in - 1, "floor");
  auto cols = at::remainder(k, in - 1);
  cols = cols + (cols >= rows).to(at::kLong);  // the diagonal is skipped
  return at::stack({rows, cols}).contiguous();
}

}  // namespace

std::string frod_role(const std::string& path) {
  const auto parts = split_dots(path);
  if (parts.size() == 1) return parts[0];
  const auto& last = parts.back();
  const auto& prev = parts[parts.size() - 2];
  if (all_digits(prev)) return last;
  const std::string role = prev + "_" + last;
  if (role == "output_dense" && parts.size() >= 3 && parts[parts.size() - 3] == "attention") return "attention_output";
  return role;
}

int64_t frod_layer_index(const std::string& path, int64_t fallback) {
  const auto parts = split_dots(path);
  const auto it = std::find(parts.begin(), parts.end(), "layers");
  if (it != parts.end() && it + 1 != parts.end() && all_digits(*(it + 1))) return std::stoll(*(it + 1));
  for (const auto& p : parts)
    if (all_digits(p)) return std::stoll(p);
  return fallback;
}

at::Tensor frod_basis(const std::vector<at::Tensor>& weights, double regularization_alpha) {
  const auto stacked = at::cat(weights, 0);
  if (stacked.size(0) < stacked.size(1))
    return std::get<2>(at::linalg_svd(stacked, /*full_matrices=*/true)).t().contiguous();
  const auto [q, r] = at::linalg_qr(stacked);
  const int64_t dim = r.size(1);
  const auto f32 = at::TensorOptions(at::kFloat);
  auto t_pi = at::zeros({dim, dim}, f32);
  int64_t start = 0;
  for (const auto& w : weights) {
    const auto slice = q.narrow(0, start, w.size(0));
    start += w.size(0);
    // Layers of one role can be highly correlated; the ridge term keeps the inverse stable.
    t_pi += at::linalg_inv(at::matmul(slice.t(), slice) + at::eye(dim, f32) * regularization_alpha);
  }
  t_pi /= static_cast<int64_t>(weights.size());
  const auto eigenvectors = std::get<1>(at::linalg_eigh(t_pi));
  return at::matmul(r.t(), eigenvectors).contiguous();
}

void FrodConfig::resolve(const Model& model) {
  // HF: TRANSFORMERS_MODELS_TO_FROD_TARGET_MODULES_MAPPING, VeRA's table plus ViT's.
  if (targets.empty())
    targets.target_list = default_targets(
        model, "FROD", lora_default_targets({{"phi", {"q_proj", "v_proj"}}, {"vit", {"query", "value"}}}));
}

NamedModules FrodConfig::layer_targets(Model& model) const {
  auto found = find_targets(model, targets, task_type);
  // HF's _init_frod_projections: weights [out, in] by layer index and role.
  std::map<int64_t, std::map<std::string, at::Tensor>> by_layer;
  int64_t fallback = 0;
  for (auto& [path, m] : found) {
    auto& host = linear_host("FROD", path, *m, LinearHost::kLinearOrConv1D);
    at::Tensor w = host.dense_weight().detach();
    if (host.weight_is_in_out()) w = w.t();
    by_layer[frod_layer_index(path, fallback++)][frod_role(path)] = w.to(at::kCPU, at::kFloat).contiguous();
  }
  if (by_layer.empty())
    throw std::runtime_error("FROD: no layer types compatible with FRoD were found; check target_modules");
  std::set<std::string> roles;
  for (const auto& [_, layer] : by_layer)
    for (const auto& [role, __] : layer) roles.insert(role);
  c10::NoGradGuard g;
  auto gen = at::detail::createCPUGenerator(projection_prng_key);
  projections_.clear();
  for (const auto& role : roles) {
    std::vector<at::Tensor> weights;
    for (const auto& [_, layer] : by_layer)
      if (auto it = layer.find(role); it != layer.end()) weights.push_back(it->second);
    auto p = std::make_shared<FrodProjection>();
    p->role = role;
    p->saved = save_projection;
    p->key = projection_prng_key;
    p->V = frod_basis(weights, regularization_alpha);
    const int64_t in = p->V.size(0);
    p->indices = draw_positions(in, sparse_rate, gen);
    p->size = at::tensor(std::vector<int64_t>{in, in}, at::kLong);
    p->V = p->V.to(model.device());
    p->indices = p->indices.to(model.device());
    projections_[role] = std::move(p);
  }
  return found;
}

std::shared_ptr<LayerAdapter> FrodConfig::make_layer_adapter(const std::string& path, Module& m,
                                                            at::Generator& gen) const {
  auto* host = &linear_host("FROD", path, m, LinearHost::kLinearOrConv1D);
  const auto it = projections_.find(frod_role(path));
  if (it == projections_.end())
    throw std::logic_error("FROD: no projection for '" + path + "' (layer_targets makes them)");
  // HF's _check_new_adapter_config: one key, and projections filed for all adapters or none.
  for (const auto& other : host->adapter_names())
    if (auto* f = dynamic_cast<FrodLayer*>(host->adapter(other))) {
      if (f->projection().key != projection_prng_key)
        throw std::invalid_argument("FROD: projection_prng_key must be the same for all adapters, got " +
                                    std::to_string(projection_prng_key) + " but adapter '" + other + "' has " +
                                    std::to_string(f->projection().key));
      if (f->projection().saved != save_projection)
        throw std::invalid_argument("FROD: save_projection must be the same for all adapters, but adapter '" +
                                    other + "' differs");
    }
  auto a = std::make_shared<FrodLayer>(host, it->second, frod_dropout);
  a->init_from_weight();  // U and lambda_l: W = U diag(lambda_l) V^T
  if (!init_weights) {  // HF: normal_(S, std=0.1), then lambda_l += randn * 0.1
    const auto f32 = at::TensorOptions(at::kFloat);
    a->s_values = at::empty({a->s_values.size(0)}, f32).normal_(0, 0.1, gen);
    a->lambda_l = a->lambda_l + at::randn({a->lambda_l.size(0)}, gen, f32) * 0.1;
  }
  a->to(host->weight_tensor()->device());
  return a;
}

std::vector<std::string> FrodConfig::trained_base_parameters(Model& model, const std::set<std::string>& adapted) const {
  return bias_parameters(model, bias, ".frod_", adapted);
}

}  // namespace peft
