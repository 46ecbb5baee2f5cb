// Where GraLoRA goes (HF PEFT's GraloraModel): Linear and Conv1D targets, LoRA's default
// table, blocks that must divide the layer's sides, HF's inits.
#include <ATen/ATen.h>

#include <stdexcept>

#include "peft/gralora.h"
#include "tuners/config_fields.h"
#include "tuners/init_draws.h"
#include "tuners/injection.h"
#include "tuners/target_match.h"

namespace peft {

void GraloraConfig::resolve(const Model& model) {
  if (targets.empty()) targets.target_list = default_targets(model, "GRALORA", lora_default_targets());
}

NamedModules GraloraConfig::layer_targets(Model& model) const { return find_targets(model, targets, task_type); }

namespace {

// k draws of [rows, cols] (HF's per-block nn.init.kaiming_uniform_), stacked [k, rows, cols].
at::Tensor stacked_kaiming(int64_t k, int64_t rows, int64_t cols, at::Generator& gen) {
  std::vector<at::Tensor> blocks;
  for (int64_t i = 0; i < k; ++i) blocks.push_back(kaiming_uniform_sqrt5(rows, cols, gen));
  return at::stack(blocks);
}

}  // namespace

std::shared_ptr<LayerAdapter> GraloraConfig::make_layer_adapter(const std::string& path, Module& m,
                                                               at::Generator& gen) const {
  auto* host = &linear_host("GRALORA", path, m, LinearHost::kLinearOrConv1D);
  const int64_t in = host->input_dim(), out = host->output_dim();
  for (const auto& [side, n] : {std::pair{"in_features", in}, std::pair{"out_features", out}})
    if (n % gralora_k != 0)
      throw std::invalid_argument("GRALORA: target module '" + path + "': " + side + " (" + std::to_string(n) +
                                  ") must be divisible by gralora_k (" + std::to_string(gralora_k) + ")");
  auto a = std::make_shared<GraloraLayer>(host, r, hybrid_r, gralora_k, alpha / static_cast<double>(r + hybrid_r),
                                          gralora_dropout);
  const int64_t k = gralora_k;
  a->A = stacked_kaiming(k, r, in / k, gen).transpose(1, 2).contiguous();
  a->B = init_weights ? at::zeros({k, r, out / k}, at::kFloat)
                      : stacked_kaiming(k, out / k, r, gen).transpose(1, 2).contiguous();
  if (hybrid_r > 0) {
    a->A_general = kaiming_uniform_sqrt5(hybrid_r, in, gen);
    a->B_general = init_weights ? at::zeros({out, hybrid_r}, at::kFloat) : kaiming_uniform_sqrt5(out, hybrid_r, gen);
  }
  a->to(host->weight_tensor()->device());
  return a;
}

std::vector<std::string> GraloraConfig::trained_base_parameters(Model& model,
                                                                const std::set<std::string>& adapted) const {
  return bias_parameters(model, bias, ".gralora_", adapted);
}

}  // namespace peft
