// extract_task_vector: a fine-tuned checkpoint minus its base, per target Linear, as a
// rank-r LoRA adapter (truncated SVD of each delta in float64).
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <map>
#include <set>
#include <stdexcept>

#include "peft/lora.h"
#include "peft/task_vector.h"
#include "tuners/target_match.h"

namespace peft {

double TaskVectorReport::total_energy() const {
  double kept = 0, total = 0;
  for (const auto& m : matrices) {
    kept += m.kept_sq;
    total += m.total_sq;
  }
  return total == 0 ? 1.0 : kept / total;
}

int64_t TaskVectorReport::skipped() const {
  return std::count_if(matrices.begin(), matrices.end(), [](const MatrixEnergy& m) { return m.skipped(); });
}

namespace {

// Same class, same parameter names and shapes; errors name the first key that differs.
void check_same_architecture(const Model& base, const Model& ft) {
  if (base.type_name() != ft.type_name())
    throw std::invalid_argument("'architectures': the base is " + base.type_name() + ", the fine-tuned checkpoint " +
                                ft.type_name());
  std::map<std::string, at::Tensor> theirs;
  for (auto& [n, t] : ft.named_parameters()) theirs.emplace(n, t);
  const auto ours = base.named_parameters();
  for (const auto& [n, t] : ours) {
    auto it = theirs.find(n);
    if (it == theirs.end())
      throw std::invalid_argument("'" + n + "': a parameter of the base that the fine-tuned checkpoint lacks");
    if (it->second.sizes() != t.sizes())
      throw std::invalid_argument("'" + n + "': shape " + c10::str(t.sizes()) + " in the base, " +
                                  c10::str(it->second.sizes()) + " in the fine-tuned checkpoint");
    theirs.erase(it);
  }
  if (!theirs.empty())
    throw std::invalid_argument("'" + theirs.begin()->first +
                                "': a parameter of the fine-tuned checkpoint that the base lacks");
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), std::string::npos, suffix) == 0;
}

// The target layers: Linear / Conv1D only (an adapter of rank r on a matrix).
std::vector<std::pair<std::string, AdaptableLayer*>> target_layers(Model& base, const TaskVectorOptions& o,
                                                                   const std::string& task_type) {
  TargetSpec spec;
  if (o.targets) {
    if (o.targets->empty()) throw std::invalid_argument("'targets' is an empty list (leave it out for all-linear)");
    const auto modules = base.named_modules();
    for (const auto& t : *o.targets)
      if (std::none_of(modules.begin(), modules.end(),
                       [&](const auto& m) { return m.first == t || ends_with(m.first, "." + t); }))
        throw std::invalid_argument("target '" + t + "' matches no module of " + base.type_name());
    spec.target_list = *o.targets;
  } else {
    spec.target_regex = "all-linear";
  }
  std::vector<std::pair<std::string, AdaptableLayer*>> out;
  for (auto& [path, m] : find_targets(base, spec, task_type)) {
    auto* host = dynamic_cast<AdaptableLayer*>(m);
    if (!host || host->kind() != LayerKind::kLinear)
      throw std::invalid_argument("target '" + path + "' is a " + m->type_name() +
                                  "; a task vector is extracted from Linear (and Conv1D) layers only");
    out.emplace_back(path, host);
  }
  return out;
}

struct Factors {
  at::Tensor A, B;  // [rank, in], [out, rank], float32
};

// delta [out, in] = U S Vh; keeps the `rank` largest: B = U_r S_r, A = Vh_r (zero-padded
// to `rank` where the matrix is smaller).
Factors factor(const at::Tensor& delta, int64_t rank, MatrixEnergy& e) {
  auto [U, S, Vh] = at::linalg_svd(delta, /*full_matrices=*/false);
  const int64_t k = std::min<int64_t>(rank, S.size(0));
  const auto sq = S.square();
  e.kept = k;
  e.kept_sq = sq.slice(0, 0, k).sum().item<double>();
  e.total_sq = sq.sum().item<double>();
  Factors f{at::zeros({rank, delta.size(1)}, at::kFloat), at::zeros({delta.size(0), rank}, at::kFloat)};
  f.A.slice(0, 0, k).copy_(Vh.slice(0, 0, k));
  f.B.slice(1, 0, k).copy_(U.slice(1, 0, k) * S.slice(0, 0, k));
  return f;
}

// The parameters outside the targets' weights that differ, with their largest difference.
std::vector<NotCaptured> uncaptured(const Model& base, const Model& ft, const std::set<std::string>& target_weights) {
  std::map<std::string, at::Tensor> theirs;
  for (auto& [n, t] : ft.named_parameters()) theirs.emplace(n, t);
  std::vector<NotCaptured> out;
  for (const auto& [n, t] : base.named_parameters()) {
    if (target_weights.count(n)) continue;
    const double d = (theirs.at(n).to(at::kDouble) - t.to(at::kDouble)).abs().max().item<double>();
    if (d != 0) out.push_back({n, d});
  }
  return out;
}

// target_modules naming the kept matrices (the given entries, or the layers' short names
// for all-linear), and exclude_modules for the layers those names would also match.
LoraConfig adapter_config(Model& base, const TaskVectorOptions& o, const std::string& task_type,
                          const std::vector<std::string>& kept) {
  LoraConfig cfg;
  // GPT-2's Conv1D stores [in, out]: say so, as HF PEFT would set it itself with a warning.
  cfg.fan_in_fan_out = dynamic_cast<AdaptableLayer*>(base.find(kept.front()))->weight_is_in_out();
  cfg.r = o.rank;
  cfg.lora_alpha = static_cast<double>(o.rank);
  cfg.task_type = task_type;
  std::set<std::string> names;
  for (const auto& path : kept) {
    if (!o.targets) {
      names.insert(path.substr(path.rfind('.') + 1));
      continue;
    }
    for (const auto& t : *o.targets)
      if (path == t || ends_with(path, "." + t)) names.insert(t);
  }
  cfg.targets.target_list = std::vector<std::string>(names.begin(), names.end());
  std::vector<std::string> excluded;
  for (const auto& [path, _] : find_targets(base, cfg.targets, task_type))
    if (std::find(kept.begin(), kept.end(), path) == kept.end()) excluded.push_back(path);
  if (!excluded.empty()) cfg.targets.exclude_list = excluded;
  return cfg;
}

void assign_factors(AdaptableLayer& host, const std::string& adapter, const Factors& f, const std::string& path) {
  LayerAdapter* a = host.adapter(adapter);
  int assigned = 0;
  if (a)
    a->visit_slots([&](const std::string& key, Module::ParamSlot& slot) {
      if (key == "lora_A.weight") *slot.tensor = f.A.to(slot.tensor->device()), ++assigned;
      if (key == "lora_B.weight") *slot.tensor = f.B.to(slot.tensor->device()), ++assigned;
    });
  if (assigned != 2) throw std::logic_error("layer '" + path + "' did not get the extracted LoRA");
}

}  // namespace

TaskVectorReport extract_task_vector(PeftModel& peft, Model& finetuned, const TaskVectorOptions& o,
                                     const std::string& adapter_name,
                                     const std::function<void(const MatrixEnergy&, size_t, size_t)>& on_matrix) {
  if (o.rank < 1) throw std::invalid_argument("'rank' must be >= 1, got " + std::to_string(o.rank));
  Model& base = peft.model();
  check_same_architecture(base, finetuned);
  const std::string task_type = base.task() == TaskKind::kCausalLM ? "CAUSAL_LM" : "";
  c10::NoGradGuard no_grad;

  TaskVectorReport report;
  std::map<std::string, Factors> factors;
  std::set<std::string> target_weights;
  const auto targets = target_layers(base, o, task_type);
  for (const auto& [path, host] : targets) {
    auto* theirs = dynamic_cast<AdaptableLayer*>(finetuned.find(path));
    if (!theirs) throw std::invalid_argument("'" + path + "': not a layer of the fine-tuned checkpoint");
    target_weights.insert(path + ".weight");
    at::Tensor delta = theirs->dense_weight().to(at::kDouble) - host->dense_weight().to(at::kDouble);
    if (host->weight_is_in_out()) delta = delta.t();  // Conv1D stores [in, out]
    MatrixEnergy e{path, delta.size(0), delta.size(1)};
    if (at::any(delta != 0).item<bool>()) factors.emplace(path, factor(delta, o.rank, e));
    report.matrices.push_back(e);
    if (on_matrix) on_matrix(e, report.matrices.size(), targets.size());
  }
  report.not_captured = uncaptured(base, finetuned, target_weights);
  if (factors.empty())
    throw std::invalid_argument("every target's delta is exactly zero: the checkpoints do not differ on the " +
                                std::to_string(report.matrices.size()) + " target matrices" +
                                (report.not_captured.empty() ? std::string(" (nor anywhere else)")
                                                             : " (only " + report.not_captured.front().name + "...)"));

  std::vector<std::string> kept;
  for (const auto& m : report.matrices)
    if (!m.skipped()) kept.push_back(m.path);
  peft.add_adapter(adapter_name, adapter_config(base, o, task_type, kept));
  try {
    for (const auto& path : kept)
      assign_factors(*dynamic_cast<AdaptableLayer*>(base.find(path)), adapter_name, factors.at(path), path);
  } catch (...) {
    peft.delete_adapter(adapter_name);
    throw;
  }
  return report;
}

}  // namespace peft
