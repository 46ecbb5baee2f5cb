// Where MiSS goes (HF PEFT's MissModel): Linear targets, the variant from init_weights, one
// MissLayer each, with HF's shape checks.
#include <ATen/ATen.h>

#include <cmath>

#include "peft/miss.h"
#include "tuners/config_fields.h"
#include "tuners/injection.h"
#include "tuners/target_match.h"

namespace peft {

void MissConfig::resolve(const Model& model) {
  if (targets.empty()) targets.target_list = default_targets(model, "MISS", lora_default_targets());
}

NamedModules MissConfig::layer_targets(Model& model) const { return find_targets(model, targets, task_type); }

std::shared_ptr<LayerAdapter> MissConfig::make_layer_adapter(const std::string& path, Module& m,
                                                            at::Generator& gen) const {
  auto* host = &linear_host("MISS", path, m);
  const int64_t in = host->input_dim(), out = host->output_dim();
  auto fail = [&](const std::string& why) { throw std::invalid_argument("MISS: '" + path + "': " + why); };
  if (r > in) fail("'r' (" + std::to_string(r) + ") must be at most in_features (" + std::to_string(in) + ")");
  auto kind = MissLayer::Kind::kBalance;
  if (init_weights == "bat") {
    if (in % r != 0 || out % r != 0)
      fail("init_weights \"bat\" needs [" + std::to_string(out) + ", " + std::to_string(in) +
           "] to divide into [r, r] blocks (r = " + std::to_string(r) + ")");
    kind = MissLayer::Kind::kBat;
  } else if (init_weights == "mini") {
    if (out % mini_r != 0)
      fail("init_weights \"mini\" needs out_features (" + std::to_string(out) + ") divisible by 'mini_r' (" +
           std::to_string(mini_r) + ")");
    kind = MissLayer::Kind::kMini;
  }
  auto a = std::make_shared<MissLayer>(host, kind, r, mini_r, miss_dropout);
  if (init_weights == "false") {
    // nn.init.kaiming_uniform_(a=sqrt(5)) on [r, out]: U(-b, b), b = 1 / sqrt(out).
    const double bound = 1.0 / std::sqrt(static_cast<double>(out));
    a->block = at::empty({r, out}, at::TensorOptions(at::kFloat)).uniform_(-bound, bound, gen);
  }
  a->to(host->weight_tensor()->device());
  return a;
}

std::vector<std::string> MissConfig::trained_base_parameters(Model& model, const std::set<std::string>& adapted) const {
  return bias_parameters(model, bias, ".miss_", adapted);
}

}  // namespace peft
