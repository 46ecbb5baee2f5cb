// add_weighted_adapter: HF PEFT 0.21's LoraModel.add_weighted_adapter and the two helpers
// it calls (_svd_generalized_task_arithmetic_weighted_adapter and
// _generalized_task_arithmetic_weighted_adapter), step for step.
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <map>
#include <set>
#include <stdexcept>

#include "peft/lora.h"
#include "peft/lora_combine.h"
#include "tuners/lora/merge_utils.h"
#include "tuners/target_match.h"
#include "util/suggest.h"

namespace peft {

const std::vector<std::string>& combination_types() {
  static const std::vector<std::string> types = {
      "svd",         "linear",          "cat",           "ties",           "ties_svd",           "dare_ties",
      "dare_linear", "dare_ties_svd",   "dare_linear_svd", "magnitude_prune", "magnitude_prune_svd"};
  return types;
}

namespace {

bool is_svd(const std::string& t) { return t.size() >= 3 && t.compare(t.size() - 3, 3, "svd") == 0; }
bool prunes(const std::string& t) { return t != "svd" && t != "linear" && t != "cat"; }
bool elects_sign(const std::string& t) { return t.find("ties") != std::string::npos; }

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& e : v) s += (s.empty() ? "" : ", ") + e;
  return s;
}

}  // namespace

void validate_weighted_adapter_options(const WeightedAdapterOptions& o, size_t n_adapters, size_t n_weights) {
  const auto& types = combination_types();
  const std::string& t = o.combination_type;
  if (std::find(types.begin(), types.end(), t) == types.end())
    throw std::invalid_argument("unknown combination_type '" + t + "'" + did_you_mean(t, types) +
                                "; valid: " + join(types));
  if (n_adapters == 0) throw std::invalid_argument("'adapters' is empty: name at least one adapter to combine");
  if (n_weights != n_adapters)
    throw std::invalid_argument("'weights' has " + std::to_string(n_weights) + " entries for " +
                                std::to_string(n_adapters) + " adapters (one weight per adapter, in order)");
  if (o.density && !prunes(t))
    throw std::invalid_argument("'density' has no effect with combination_type '" + t +
                                "' (it applies to ties, dare_*, magnitude_prune and their *_svd forms)");
  if (prunes(t) && !o.density) throw std::invalid_argument("combination_type '" + t + "' needs 'density'");
  if (o.density && !(*o.density >= 0 && *o.density <= 1))
    throw std::invalid_argument("'density' must be between 0 and 1, got " + std::to_string(*o.density));
  if (o.majority_sign_method != "total" && o.majority_sign_method != "frequency")
    throw std::invalid_argument("'majority_sign_method' must be total or frequency, got '" + o.majority_sign_method + "'");
  auto svd_only = [&](const char* key, bool given) {
    if (given && !is_svd(t))
      throw std::invalid_argument("'" + std::string(key) + "' applies only to the *svd combination types, not '" + t + "'");
  };
  svd_only("svd_rank", o.svd_rank.has_value());
  svd_only("svd_clamp", o.svd_clamp.has_value());
  if (o.svd_rank && *o.svd_rank < 1)
    throw std::invalid_argument("'svd_rank' must be >= 1, got " + std::to_string(*o.svd_rank));
  if (o.svd_clamp && !(*o.svd_clamp >= 0 && *o.svd_clamp <= 1))
    throw std::invalid_argument("'svd_clamp' is a quantile between 0 and 1, got " + std::to_string(*o.svd_clamp));
}

namespace {

// The adapter's LoRA config, refusing what HF would merge into something that is not a
// weighted merge of the adapters.
const LoraConfig& lora_config(const PeftModel& peft, const std::string& name) {
  const auto names = peft.adapters();
  if (std::find(names.begin(), names.end(), name) == names.end())
    throw std::invalid_argument("adapter '" + name + "' does not exist" + did_you_mean(name, names));
  const AdapterConfig& c = peft.config(name);
  if (c.peft_type() != "LORA")
    throw std::invalid_argument("adapter '" + name + "' is " + c.peft_type() + "; add_weighted_adapter combines LoRA " +
                                "adapters (IA3: add_weighted_ia3_adapter, include/peft/ia3_combine.h)");
  const auto& lora = static_cast<const LoraConfig&>(c);
  if (lora.use_dora)
    throw std::invalid_argument("adapter '" + name + "' uses DoRA: HF PEFT's add_weighted_adapter merges only A and B "
                                "and leaves the magnitude vector of a fresh adapter, so DoRA adapters are refused");
  if (lora.lora_bias)
    throw std::invalid_argument("adapter '" + name + "' has lora_bias: combining merges only A and B, which would "
                                "drop its bias, so such adapters are refused");
  return lora;
}

// HF: "the maximum possible rank", r or the largest rank_pattern value.
int64_t max_rank(const LoraConfig& c) {
  int64_t r = c.r;
  for (const auto& [_, v] : c.rank_pattern) r = std::max(r, v);
  return r;
}

int64_t new_rank_for(const std::string& type, const std::vector<std::string>& names,
                     const std::vector<const LoraConfig*>& cfgs, const std::optional<int64_t>& svd_rank) {
  std::vector<int64_t> ranks;
  for (const auto* c : cfgs) ranks.push_back(max_rank(*c));
  if (type == "cat") {
    int64_t sum = 0;
    for (auto r : ranks) sum += r;
    return sum;
  }
  if (is_svd(type)) return svd_rank ? *svd_rank : *std::max_element(ranks.begin(), ranks.end());
  for (size_t i = 1; i < ranks.size(); ++i)
    if (ranks[i] != ranks[0])
      throw std::invalid_argument("combination_type '" + type + "' needs adapters of one rank, but '" + names[0] +
                                  "' has r=" + std::to_string(ranks[0]) + " and '" + names[i] + "' has r=" +
                                  std::to_string(ranks[i]) + " (cat and the *_svd types take different ranks)");
  return ranks[0];
}

// HF's new target_modules: the union of the lists, or the regexes joined as alternatives.
TargetSpec combined_targets(PeftModel& peft, const std::vector<std::string>& names,
                            const std::vector<const LoraConfig*>& cfgs) {
  std::vector<ListOrRegex> values;
  for (const auto* c : cfgs) values.push_back(injected_targets(peft.model(), *c));
  const ListOrRegex u = united(values, names, "target_modules");
  TargetSpec out = cfgs[0]->targets;
  out.target_list = u.list;
  out.target_regex = u.regex;
  return out;
}

struct LoraSlots {
  at::Tensor* A = nullptr;
  at::Tensor* B = nullptr;
};

// The adapter's A and B on `host` (lora_A/lora_B or the embedding's), if it has one there.
std::optional<LoraSlots> lora_slots(AdaptableLayer& host, const std::string& name) {
  LayerAdapter* a = host.adapter(name);
  if (!a) return std::nullopt;
  LoraSlots s;
  a->visit_slots([&](const std::string& key, Module::ParamSlot& slot) {
    if (key == "lora_A.weight" || key == "lora_embedding_A") s.A = slot.tensor;
    if (key == "lora_B.weight" || key == "lora_embedding_B") s.B = slot.tensor;
  });
  if (!s.A || !s.B) return std::nullopt;
  return s;
}

struct Target {
  std::string path;
  AdaptableLayer* host;
};

// The random numbers HF draws while injecting the new adapter (update_layer: two
// nn.Linear constructions, then reset_lora_parameters; for embeddings two randn and a
// normal_), drawn here from the default generator so the DARE masks that follow match.
void replay_hf_init_draws(const std::vector<Target>& targets, int64_t r, const std::string& init) {
  for (const auto& t : targets) {
    const int64_t in = t.host->input_dim(), out = t.host->output_dim();
    if (t.host->kind() == LayerKind::kEmbedding) {
      (void)at::randn({r, in});
      (void)at::randn({out, r});
      if (init != "false") (void)at::empty({out, r}).normal_();
      continue;
    }
    (void)at::empty({r, in}).uniform_(-1, 1);   // nn.Linear(in_features, r)
    (void)at::empty({out, r}).uniform_(-1, 1);  // nn.Linear(r, out_features)
    if (init == "true") (void)at::empty({r, in}).uniform_(-1, 1);
    else if (init == "gaussian") (void)at::empty({r, in}).normal_(0, 1.0 / static_cast<double>(r));
  }
}

struct Source {
  std::string name;
  double weight;
  double scaling;
  LoraSlots slots;
};

// The weighted adapters that have LoRA on this layer, in the given order.
std::vector<Source> sources_on(const Target& t, const std::vector<std::string>& names,
                               const std::vector<double>& weights, const std::vector<const LoraConfig*>& cfgs) {
  std::vector<Source> out;
  for (size_t i = 0; i < names.size(); ++i)
    if (auto s = lora_slots(*t.host, names[i])) out.push_back({names[i], weights[i], cfgs[i]->scaling_for(t.path), *s});
  if (out.empty())
    throw std::invalid_argument("layer '" + t.path + "': none of the combined adapters has LoRA there (HF: \"No "
                                "matching LoRAs found\")");
  return out;
}

void combine_cat(const std::vector<Source>& src, at::Tensor* A, at::Tensor* B) {
  std::vector<at::Tensor> as, bs;
  for (const auto& s : src) {
    as.push_back(*s.slots.A * s.weight * s.scaling);
    bs.push_back(*s.slots.B);
  }
  auto a = at::cat(as, 0), b = at::cat(bs, 1);
  A->slice(0, 0, a.size(0)).copy_(a);
  B->slice(1, 0, b.size(1)).copy_(b);
}

at::Tensor merged_delta(const std::string& type, const std::vector<at::Tensor>& deltas, const at::Tensor& w,
                        const WeightedAdapterOptions& o) {
  namespace mu = merge_utils;
  if (type == "svd") return mu::task_arithmetic(deltas, w);
  if (type == "ties_svd") return mu::ties(deltas, w, *o.density, o.majority_sign_method);
  if (type == "dare_linear_svd") return mu::dare_linear(deltas, w, *o.density);
  if (type == "dare_ties_svd") return mu::dare_ties(deltas, w, *o.density, o.majority_sign_method);
  return mu::magnitude_prune(deltas, w, *o.density);
}

// The weighted delta weights merged, then factored by a truncated SVD: A = Vh, B = U S.
std::pair<at::Tensor, at::Tensor> combine_svd(const Target& t, const std::vector<Source>& src, int64_t rank,
                                              bool transposed, const WeightedAdapterOptions& o) {
  std::vector<at::Tensor> deltas;
  std::vector<double> w;
  for (const auto& s : src) {
    // HF's get_delta_weight: transpose(B @ A, fan_in_fan_out) * scaling ((B @ A).T for embeddings).
    auto ba = at::matmul(*s.slots.B, *s.slots.A);
    deltas.push_back((transposed ? ba.t() : ba) * s.scaling);
    w.push_back(s.weight);
  }
  auto delta = merged_delta(o.combination_type, deltas, at::tensor(w, at::kFloat), o);
  if (transposed) delta = delta.t();
  if (rank > std::min(delta.size(0), delta.size(1)))
    throw std::invalid_argument("svd_rank " + std::to_string(rank) + " exceeds min(out, in) = " +
                                std::to_string(std::min(delta.size(0), delta.size(1))) + " of layer '" + t.path + "'");
  auto [U, S, Vh] = at::linalg_svd(delta, o.svd_full_matrices);
  U = U.slice(1, 0, rank);
  S = S.slice(0, 0, rank);
  U = at::matmul(U, at::diag(S));
  Vh = Vh.slice(0, 0, rank);
  if (o.svd_clamp) {
    auto dist = at::cat({U.flatten(), Vh.flatten()});
    auto hi = at::quantile(dist, *o.svd_clamp);
    auto lo = -hi;
    U = U.clamp(lo, hi);
    Vh = Vh.clamp(lo, hi);
  }
  return {Vh, U};
}

// linear, ties, dare_*, magnitude_prune on A and on B separately, each side carrying the
// square root of |weight * scaling| (the sign on A only).
std::pair<at::Tensor, at::Tensor> combine_factors(const std::vector<Source>& src, const WeightedAdapterOptions& o) {
  std::vector<double> wa, wb;
  std::vector<at::Tensor> as, bs;
  for (const auto& s : src) {
    const double ws = s.weight * s.scaling;
    const double sign = ws >= 0 ? 1 : -1;
    wa.push_back(std::sqrt(std::abs(ws)) * sign);
    wb.push_back(std::sqrt(std::abs(ws)));
    as.push_back(*s.slots.A);
    bs.push_back(*s.slots.B);
  }
  const auto dtype = as[0].scalar_type();
  const std::string& type = o.combination_type;
  auto merge = [&](const std::vector<at::Tensor>& ts, const at::Tensor& w) {
    namespace mu = merge_utils;
    if (type == "linear") return mu::task_arithmetic(ts, w);
    if (type == "ties") return mu::ties(ts, w, *o.density, o.majority_sign_method);
    if (type == "dare_linear") return mu::dare_linear(ts, w, *o.density);
    if (type == "dare_ties") return mu::dare_ties(ts, w, *o.density, o.majority_sign_method);
    return mu::magnitude_prune(ts, w, *o.density);
  };
  auto a = merge(as, at::tensor(wa, at::kFloat));
  auto b = merge(bs, at::tensor(wb, at::kFloat));
  return {a.to(dtype), b.to(dtype)};
}

void assign(at::Tensor* slot, const at::Tensor& value, const std::string& what, const std::string& path) {
  if (slot->sizes() != value.sizes())
    throw std::invalid_argument("layer '" + path + "': the merged " + what + " has shape " + c10::str(value.sizes()) +
                                " but the combined adapter's is " + c10::str(slot->sizes()) +
                                " (rank_pattern gives this layer another rank)");
  *slot = value.contiguous().clone();
}

// Every layer of the merged adapter: zeroed, then filled as the combination type says.
void fill_combined(const std::vector<Target>& targets, const std::string& adapter_name,
                   const std::vector<std::string>& adapters, const std::vector<double>& weights,
                   const std::vector<const LoraConfig*>& cfgs, int64_t rank, const WeightedAdapterOptions& o) {
  c10::NoGradGuard no_grad;
  for (const auto& t : targets) {
    auto slots = lora_slots(*t.host, adapter_name);
    if (!slots) throw std::logic_error("layer '" + t.path + "' did not get the combined adapter");
    *slots->A = at::zeros_like(*slots->A);
    *slots->B = at::zeros_like(*slots->B);
    const auto src = sources_on(t, adapters, weights, cfgs);
    if (o.combination_type == "cat") {
      combine_cat(src, slots->A, slots->B);
    } else {
      // HF transposes delta weights of embeddings and of fan_in_fan_out layers (GPT-2's Conv1D).
      const bool transposed = t.host->kind() == LayerKind::kEmbedding || t.host->weight_is_in_out();
      auto [a, b] = is_svd(o.combination_type) ? combine_svd(t, src, rank, transposed, o) : combine_factors(src, o);
      assign(slots->A, a, "A", t.path);
      assign(slots->B, b, "B", t.path);
    }
  }
}

}  // namespace

void add_weighted_adapter(PeftModel& peft, const std::vector<std::string>& adapters, const std::vector<double>& weights,
                          const std::string& adapter_name, const WeightedAdapterOptions& options) {
  validate_weighted_adapter_options(options, adapters.size(), weights.size());
  for (double w : weights)
    if (!std::isfinite(w)) throw std::invalid_argument("'weights' must be finite numbers");
  const auto existing = peft.adapters();
  if (std::find(existing.begin(), existing.end(), adapter_name) != existing.end())
    throw std::invalid_argument("an adapter named '" + adapter_name + "' already exists");
  std::vector<const LoraConfig*> cfgs;
  for (const auto& n : adapters) cfgs.push_back(&lora_config(peft, n));
  // The merged adapter is built with adapters[0]'s config, init included.
  const std::string& init = cfgs[0]->init_lora_weights;
  if (init == "pissa" || init == "olora")
    throw std::invalid_argument("adapter '" + adapters[0] + "' has init_lora_weights '" + init +
                                "': HF PEFT would rerun that init on the base weights while adding the merged adapter "
                                "(list another adapter first)");
  for (size_t i = 0; i < adapters.size(); ++i)
    if (!cfgs[i]->trainable_token_indices.is_null())
      throw std::invalid_argument("adapter '" + adapters[i] +
                                  "' has trainable_token_indices: token rows are not combined (merge it instead)");
  for (size_t i = 0; i < adapters.size(); ++i)
    if (std::count(adapters.begin(), adapters.end(), adapters[i]) > 1)
      throw std::invalid_argument("adapter '" + adapters[i] + "' is named twice");
  std::vector<const TargetSpec*> targets_of;
  for (const auto* c : cfgs) targets_of.push_back(&c->targets);
  check_no_shared_modules_to_save(peft.model(), adapters, targets_of);
  WeightedAdapterOptions o = options;
  if (adapters.size() == 1) o.combination_type = "linear";  // as HF: one adapter merges linearly
  if (o.density && *o.density >= 1 && prunes(o.combination_type))
    std::cerr << "warning: density " << *o.density << " keeps every entry: no pruning is performed\n";
  const int64_t rank = new_rank_for(o.combination_type, adapters, cfgs, o.svd_rank);

  LoraConfig cfg = *cfgs[0];
  cfg.r = rank;
  cfg.lora_alpha = static_cast<double>(rank);
  cfg.rank_pattern.clear();
  cfg.alpha_pattern.clear();
  cfg.targets = combined_targets(peft, adapters, cfgs);
  std::vector<Target> targets;
  for (auto& [path, m] : cfg.layer_targets(peft.model())) {
    auto* host = dynamic_cast<AdaptableLayer*>(m);
    if (!host) throw std::invalid_argument("target module '" + path + "' takes no adapters");
    targets.push_back({path, host});
  }
  peft.add_adapter(adapter_name, cfg);
  replay_hf_init_draws(targets, rank, cfg.init_lora_weights);

  try {
    fill_combined(targets, adapter_name, adapters, weights, cfgs, rank, o);
  } catch (...) {
    peft.delete_adapter(adapter_name);  // no half-made adapter stays behind
    throw;
  }
}

}  // namespace peft
