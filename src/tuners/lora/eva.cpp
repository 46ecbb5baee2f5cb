#include "tuners/lora/eva.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/GradMode.h>

#include <cmath>
#include <iostream>
#include <memory>
#include <stdexcept>
#include <vector>

#include "peft/model.h"
#include "tuners/lora/svd_lowrank.h"
#include "tuners/lora/target_probes.h"

namespace peft {

namespace {

// HF's peft.utils.incremental_pca.IncrementalPCA with lowrank=True, lowrank_seed=42 (each
// fit sketches with a generator seeded 42) and niter 4, op for op, so the dtypes promote as
// there: the first fit is float32, later ones float64 (the mean correction is).
struct IncrementalPca {
  int64_t n_components = 0;
  at::Tensor mean, var, n_seen, components, singular_values, explained_variance_ratio;

  void partial_fit(at::Tensor X) {
    const bool first = !components.defined();
    const int64_t n = X.size(0);
    if (first) n_seen = at::zeros({1}, at::kLong);
    auto [col_mean, col_var, n_total] = mean_and_var(X);
    if (first) {
      X.sub_(col_mean);
    } else {
      const auto batch_mean = X.mean(0);
      X.sub_(batch_mean);
      const auto factor = at::sqrt(n_seen.to(at::kDouble) / n_total * n);
      X = at::vstack({singular_values.view({-1, 1}) * components, X, factor * (mean - batch_mean)});
    }
    auto gen = at::make_generator<at::CPUGeneratorImpl>(42);
    auto [U, S, V] = svd_lowrank(X, 2 * n_components, 4, gen);
    auto Vt = V.t();
    // svd_flip(u_based_decision=False): each row's largest entry positive.
    const auto at_max = Vt.gather(1, Vt.abs().argmax(1, /*keepdim=*/true));
    Vt = Vt * at::sign(at_max);
    const auto ratio = S.square() / at::sum(col_var * n_total);
    n_seen = n_total;
    components = Vt.narrow(0, 0, std::min(n_components, Vt.size(0)));
    singular_values = S.narrow(0, 0, components.size(0));
    mean = col_mean;
    var = col_var;
    explained_variance_ratio = ratio.narrow(0, 0, components.size(0));
  }

  // _incremental_mean_and_var (float64 sums of the float32 rows).
  std::tuple<at::Tensor, at::Tensor, at::Tensor> mean_and_var(const at::Tensor& X) const {
    const auto new_count = at::full({1}, X.size(0), at::kLong);
    const auto total = n_seen + new_count;
    const auto last_sum = mean.defined() ? mean * n_seen : at::zeros({X.size(1)}, at::kDouble);
    const auto new_sum = at::sum(X, {0}, false, at::kDouble);
    const auto updated_mean = (last_sum + new_sum) / total;
    auto temp = X - new_sum / new_count;
    const auto correction = at::sum(temp, {0}, false, at::kDouble).square();
    temp.square_();
    auto new_unnormalized = at::sum(temp, {0}, false, at::kDouble);
    new_unnormalized -= correction / new_count;
    if (!var.defined()) return {updated_mean, new_unnormalized / total, total};
    const auto last_over_new = n_seen.to(at::kDouble) / new_count;
    const auto unnormalized =
        var * n_seen + new_unnormalized + last_over_new / total * (last_sum / last_over_new - new_sum).square();
    return {updated_mean, unnormalized / total, total};
  }
};

// The token mask of the batch being run, shared by the probes.
struct EvaRun {
  at::Tensor mask;
  double tau = 0.99;
};

// HF's HashHook then SVDHook on one layer: first a fingerprint of the masked inputs (to find
// layers fed the same tensor), then, while active, a PCA step per forward and the
// per-component convergence test against the previous components.
class EvaProbe : public LayerAdapter {
 public:
  EvaProbe(AdaptableLayer* host, std::string path, std::shared_ptr<const EvaRun> run)
      : LayerAdapter(host), path_(std::move(path)), run_(std::move(run)) {}
  std::string type_name() const override { return "EvaProbe"; }
  at::Tensor forward(const at::Tensor& x, const at::Tensor& out) override {
    if (hashing) {
      hash = fingerprint(rows(x));
    } else if (fitting) {
      fit(rows(x));
    }
    return out;
  }
  void merge() override {}
  void unmerge() override {}
  std::vector<at::Tensor*> trainable_slots() override { return {}; }

  bool hashing = true, fitting = false;
  uint64_t hash = 0;
  IncrementalPca pca;
  at::Tensor converged;  // [n_components] bool

 private:
  // HF's prepare_layer_inputs_fn_language_modeling: the rows of x the token mask selects.
  at::Tensor rows(const at::Tensor& x) const {
    const auto& mask = run_->mask;
    if (x.dim() < 2 || !mask.sizes().equals(x.sizes().slice(0, x.dim() - 1)))
      throw std::runtime_error("EVA: the inputs of '" + path_ + "' are " + c10::str(x.sizes()) +
                               ", not one row per token of the batch " + c10::str(mask.sizes()) +
                               "; leave it out of target_modules");
    const auto flat = x.detach().reshape({-1, x.size(-1)});
    const auto idx = mask.reshape(-1).nonzero().squeeze(1).to(flat.device());
    return flat.index_select(0, idx).to(at::kCPU, at::kFloat);
  }

  static uint64_t fingerprint(const at::Tensor& r) {
    const auto c = r.contiguous();
    uint64_t h = 1469598103934665603ull ^ static_cast<uint64_t>(c.size(0));
    const auto* p = static_cast<const unsigned char*>(c.data_ptr());
    for (size_t i = 0, n = c.numel() * c.element_size(); i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
    return h;
  }

  void fit(at::Tensor states) {
    if (states.size(0) < pca.n_components) {  // HF skips such a batch for this layer
      if (!warned_)
        std::cerr << "EVA: skipping batches with fewer than " << pca.n_components << " tokens for " << path_ << "\n";
      warned_ = true;
      return;
    }
    const at::Tensor previous = pca.components.defined() ? pca.components.clone() : at::Tensor();
    pca.partial_fit(states);
    if (!previous.defined()) return;
    converged = at::cosine_similarity(pca.components, previous, 1, 1e-8) >= run_->tau;
  }

  std::string path_;
  std::shared_ptr<const EvaRun> run_;
  bool warned_ = false;
};

// HF's _get_rank_distribution: the budget goes to the largest explained-variance ratios
// over all layers (a layer contributing at most its max components; followers of an equal
// group contribute their leader's); in a group the leader then holds the largest count.
std::vector<int64_t> rank_distribution(const std::vector<EvaProbe*>& leader_of, const std::vector<size_t>& order,
                                       const std::vector<std::pair<size_t, size_t>>& followers,
                                       const std::vector<int64_t>& max_components, int64_t budget) {
  std::vector<size_t> keys;
  std::vector<at::Tensor> values;
  for (size_t k : order) {
    const auto& evr = leader_of[k]->pca.explained_variance_ratio;
    const int64_t n = std::min(max_components[k], evr.size(0));
    for (int64_t i = 0; i < n; ++i) {
      keys.push_back(k);
      values.push_back(evr[i]);
    }
  }
  const auto idx = std::get<1>(at::sort(at::stack(values), /*stable=*/true, 0, /*descending=*/true));
  std::vector<int64_t> counts(leader_of.size(), 0);
  for (int64_t i = 0; i < std::min<int64_t>(budget, idx.size(0)); ++i) ++counts[keys[idx[i].item<int64_t>()]];
  for (const auto& [k, leader] : followers)
    if (counts[leader] < counts[k]) std::swap(counts[leader], counts[k]);
  return counts;
}

}  // namespace

std::map<std::string, at::Tensor> eva_components(Model& model, const LoraConfig& config, const EvaData& data,
                                                 int64_t max_forwards) {
  if (data.num_batches == 0) throw std::invalid_argument("EVA: the calibration data is empty");
  c10::NoGradGuard no_grad;
  auto run = std::make_shared<EvaRun>();
  run->tau = config.eva.tau;
  TargetProbes probes(model, config, "EVA", [&](AdaptableLayer* h, const std::string& path) {
    return std::make_shared<EvaProbe>(h, path, run);
  });
  std::vector<EvaProbe*> probe;
  for (const auto& p : probes.probes()) probe.push_back(static_cast<EvaProbe*>(p.adapter.get()));
  const size_t L = probe.size();
  std::vector<int64_t> max_components(L);
  int64_t budget = 0;
  double rho = config.eva.rho;
  if (rho > 1000) {  // HF's ceiling on unusually high rho: the largest parameter side / r
    int64_t max_dim = 0;
    for (const auto& [_, t] : model.named_parameters())
      for (int64_t s : t.sizes()) max_dim = std::max(max_dim, s);
    rho = std::min(rho, static_cast<double>(max_dim / config.r));
  }
  for (size_t k = 0; k < L; ++k) {
    const auto& p = probes.probes()[k];
    const int64_t r = config.rank_for(p.path);
    max_components[k] = static_cast<int64_t>(std::nearbyint(static_cast<double>(r) * rho));  // Python's round
    budget += r;
    if (max_components[k] > p.host->input_dim())  // HF's IncrementalPCA refuses it at the first fit
      throw std::invalid_argument("EVA: '" + p.path + "' has " + std::to_string(p.host->input_dim()) +
                                  " inputs, fewer than its " + std::to_string(max_components[k]) +
                                  " components (r * rho); lower r or eva_config 'rho'");
  }
  auto forward = [&](size_t step) {
    const size_t i = step % data.num_batches;
    run->mask = data.token_mask(i).to(at::kBool);
    data.forward(i);
  };
  forward(0);  // fingerprints: layers fed equal inputs share one PCA (the first of them leads)
  std::vector<size_t> leader(L);
  std::vector<std::pair<size_t, size_t>> followers;  // (follower, leader), groups in first-seen order
  std::vector<size_t> order;                          // leaders, then followers (HF's layer_hook_map)
  for (size_t k = 0; k < L; ++k) {
    leader[k] = k;
    for (size_t j = 0; j < k; ++j)
      if (leader[j] == j && probe[j]->hash == probe[k]->hash) {
        leader[k] = j;
        break;
      }
  }
  for (size_t k = 0; k < L; ++k)
    if (leader[k] == k) order.push_back(k);
  for (size_t j : order)
    for (size_t k = j + 1; k < L; ++k)
      if (leader[k] == j) followers.emplace_back(k, j);
  for (const auto& [k, j] : followers) order.push_back(k);
  for (const auto& [k, j] : followers) max_components[j] = std::max(max_components[j], max_components[k]);
  for (const auto& [k, j] : followers) max_components[k] = max_components[j];
  std::vector<EvaProbe*> leader_of(L);
  for (size_t k = 0; k < L; ++k) {
    leader_of[k] = probe[leader[k]];
    probe[k]->hashing = false;
    probe[k]->fitting = leader[k] == k;
    probe[k]->pca.n_components = max_components[k];
    probe[k]->converged = at::zeros({max_components[k]}, at::kBool);
  }

  std::vector<int64_t> rank_dist = max_components;
  std::vector<bool> done(L, false);
  int64_t forwards = 0;
  for (size_t step = 0;; ++step) {
    bool all_done = true;
    for (size_t k = 0; k < L; ++k) {
      if (leader[k] != k) continue;
      const auto& c = probe[k]->converged;
      const bool conv = c.narrow(0, 0, std::min(rank_dist[k], c.size(0))).all().item<bool>();
      if (!done[k] && conv) done[k] = true, probe[k]->fitting = false;
      else if (done[k] && !conv) done[k] = false, probe[k]->fitting = true;
      all_done = all_done && done[k];
    }
    if (all_done) break;
    if (forwards == max_forwards) {
      std::cerr << "warning: EVA: not every layer's components converged (tau " << config.eva.tau << ") in "
                << max_forwards << " batches; using the latest\n";
      break;
    }
    forward(step);
    ++forwards;
    bool fitted = true;
    for (size_t k : order) fitted = fitted && leader_of[k]->pca.components.defined();
    if (fitted) rank_dist = rank_distribution(leader_of, order, followers, max_components, budget);
    // A layer no batch gave enough tokens would hold HF's loop forever.
    if (!fitted && forwards >= static_cast<int64_t>(data.num_batches))
      for (size_t k = 0; k < L; ++k)
        if (!leader_of[k]->pca.components.defined())
          throw std::runtime_error("EVA: no calibration batch has " + std::to_string(max_components[k]) +
                                   " tokens for '" + probes.probes()[k].path +
                                   "' (r * rho components); use larger batches or lower r or eva_config 'rho'");
  }
  std::cerr << "EVA: components of " << L << " layers (" << order.size() - followers.size() << " distinct inputs) after "
            << forwards << " batches\n";

  std::map<std::string, at::Tensor> out;
  for (size_t k = 0; k < L; ++k) {
    const auto& pca = leader_of[k]->pca;
    const int64_t rank = std::min(rank_dist[k], pca.components.size(0));
    auto u = pca.components.narrow(0, 0, rank);
    // whiten: each component over √(its singular value), once (HF divides a view in place,
    // so layers sharing a PCA divide the shared rows again).
    if (config.eva.whiten) u = u / pca.singular_values.narrow(0, 0, rank).sqrt().view({-1, 1});
    out[probes.probes()[k].path] = u.to(at::kFloat).contiguous();
  }
  return out;
}

void apply_eva(Model& model, LoraConfig& config, std::map<std::string, at::Tensor> components) {
  if (config.target_parameters) throw std::invalid_argument("EVA init does not cover target_parameters");
  if (!config.trainable_token_indices.is_null())
    throw std::invalid_argument("EVA init with trainable_token_indices is not supported");
  std::vector<std::pair<std::string, int64_t>> rank_pattern;
  std::vector<std::pair<std::string, double>> alpha_pattern;
  std::vector<std::string> adapted, others;
  auto kept = std::make_shared<std::map<std::string, at::Tensor>>();
  for (const auto& [path, _] : config.layer_targets(model)) {
    const int64_t r = config.rank_for(path);
    double alpha = config.alpha_for(path);
    int64_t rank = r;
    if (auto it = components.find(path); it != components.end()) {
      rank = it->second.size(0);
      if (rank == 0) continue;  // EVA gave it no rank: not adapted
      if (rank != r && config.eva.adjust_scaling_factors) alpha *= static_cast<double>(rank) / static_cast<double>(r);
      (*kept)[path] = std::move(it->second);
      adapted.push_back(path);
    } else {
      others.push_back(path);  // not a Linear (an embedding): HF's default init
    }
    if (rank != config.r) rank_pattern.emplace_back(path, rank);
    if (alpha != config.lora_alpha) alpha_pattern.emplace_back(path, alpha);
  }
  adapted.insert(adapted.end(), others.begin(), others.end());
  if (adapted.empty()) throw std::runtime_error("EVA gave every target rank 0: nothing to adapt");
  config.rank_pattern = std::move(rank_pattern);
  config.alpha_pattern = std::move(alpha_pattern);
  config.targets.target_list = std::move(adapted);
  config.targets.target_regex.reset();
  config.calibration = std::move(kept);
}

}  // namespace peft
