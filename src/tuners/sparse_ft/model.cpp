// Where SPARSE_FT goes: Linear and Conv1D targets (LoRA's default table), each layer's
// positions from its mask, a ShiraLayer under SPARSE_FT's keys.
#include <ATen/ATen.h>

#include "peft/shira.h"
#include "peft/sparse_ft.h"
#include "tuners/config_fields.h"
#include "tuners/injection.h"
#include "tuners/lora/lora_ga.h"
#include "tuners/target_match.h"

namespace peft {

at::Tensor top_positions(const at::Tensor& score, int64_t n) {
  const int64_t in = score.size(1);
  // A stable descending sort keeps equal scores in index order: ties go to the lower index.
  const auto order = std::get<1>(score.detach().to(at::kCPU, at::kFloat).flatten().sort(/*stable=*/true, 0, true));
  const auto flat = std::get<0>(order.narrow(0, 0, n).sort());
  return row_major_positions(flat, in);
}

void SparseFtConfig::resolve(const Model& model) {
  if (targets.empty()) targets.target_list = default_targets(model, "SPARSE_FT", lora_default_targets());
}

NamedModules SparseFtConfig::layer_targets(Model& model) const { return find_targets(model, targets, task_type); }

std::unique_ptr<AdapterConfig> SparseFtConfig::for_loading() const {
  auto c = std::make_unique<SparseFtConfig>(*this);
  c->positions_from_file = true;
  return c;
}

std::shared_ptr<LayerAdapter> SparseFtConfig::make_layer_adapter(const std::string& path, Module& m,
                                                                 at::Generator& gen) const {
  auto* host = &linear_host("SPARSE_FT", path, m, LinearHost::kLinearOrConv1D);
  const int64_t in = host->input_dim(), out = host->output_dim(), n = entries(out, in);
  at::Tensor indices;
  if (positions_from_file) {
    indices = at::full({2, n}, -1, at::TensorOptions(at::kInt));  // the file's replace them
  } else if (mask_type == "random") {
    const auto flat = std::get<0>(at::randperm(out * in, gen, at::TensorOptions(at::kLong)).narrow(0, 0, n).sort());
    indices = row_major_positions(flat, in);
  } else if (mask_type == "magnitude") {
    if (host->weight_quantized())
      throw std::invalid_argument("SPARSE_FT: mask_type 'magnitude' reads '" + path + "''s weight, which is 4-bit");
    auto w = host->dense_weight().abs();
    indices = top_positions(host->weight_is_in_out() ? w.t() : w, n);
  } else {
    if (!calibration || !calibration->count(path))
      throw std::invalid_argument("SPARSE_FT: mask_type 'gradient' needs a calibration pass over training data ("
                                  "`peft train` runs it); none reached '" + path + "'");
    indices = top_positions(calibration->at(path).abs(), n);
  }
  auto a = std::make_shared<ShiraLayer>(host, indices, key_prefix() + path + ".sparse_ft_indices", "SPARSE_FT",
                                        "sparse_ft_values");
  if (!init_weights) a->weight = at::randn({n}, gen, at::TensorOptions(at::kFloat)) * 0.02;
  a->to(host->weight_tensor()->device());
  return a;
}

std::map<std::string, at::Tensor> sparse_ft_gradients(Model& model, const SparseFtConfig& config,
                                                      const std::function<void()>& train_step) {
  // Refuse what the adapter will refuse before spending a calibration pass on it.
  for (auto& [path, m] : config.layer_targets(model)) (void)linear_host("SPARSE_FT", path, *m, LinearHost::kLinearOrConv1D);
  // LoRA-GA's estimate over the same targets: only their weights get gradients.
  LoraConfig probe;
  probe.targets = config.targets;
  probe.task_type = config.task_type;
  return lora_ga_gradients(model, probe, train_step);
}

}  // namespace peft
