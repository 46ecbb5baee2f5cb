// Where GLoRA goes (HF PEFT's GloraModel): plain Linear targets only (HF refuses GPT-2's
// Conv1D: "not a plain torch.nn.Linear"), LoRA's default table, HF's inits.
#include <ATen/ATen.h>

#include "peft/glora.h"
#include "tuners/config_fields.h"
#include "tuners/init_draws.h"
#include "tuners/injection.h"
#include "tuners/target_match.h"

namespace peft {

void GloraConfig::resolve(const Model& model) {
  if (targets.empty()) targets.target_list = default_targets(model, "GLORA", lora_default_targets());
}

NamedModules GloraConfig::layer_targets(Model& model) const { return find_targets(model, targets, task_type); }

namespace {

// HF's reset_parameters of one path, in its order (a LoRA path draws Xu, then Xd).
void init_path(GloraPath& p, bool init_weights, at::Generator& gen) {
  const bool draw = !init_weights;
  switch (p.kind) {
    case GloraPath::Kind::kLora:
      p.Xu = kaiming_uniform_sqrt5(p.Xu.size(0), p.Xu.size(1), gen);
      if (draw) p.Xd = kaiming_uniform_sqrt5(p.Xd.size(0), p.Xd.size(1), gen);
      break;
    case GloraPath::Kind::kVector:  // [n, 1] draws with fan_in 1; a bias-sized [n] as a [1, n] row
      if (draw)
        p.X = p.X.dim() == 2 ? kaiming_uniform_sqrt5(p.X.size(0), 1, gen)
                             : kaiming_uniform_sqrt5(1, p.X.size(0), gen).reshape({-1});
      break;
    case GloraPath::Kind::kConstant:
      if (draw) p.X = at::empty({1}, at::TensorOptions(at::kFloat)).normal_(0, 0.02, gen);
      break;
    case GloraPath::Kind::kNone:
      break;
  }
}

}  // namespace

std::shared_ptr<LayerAdapter> GloraConfig::make_layer_adapter(const std::string& path, Module& m,
                                                              at::Generator& gen) const {
  auto* host = &linear_host("GLORA", path, m);
  auto a = std::make_shared<GloraLayer>(host, *this, key_prefix() + path + ".");
  for (auto* p : {&a->A, &a->B, &a->C, &a->D, &a->E}) init_path(*p, init_weights, gen);
  a->to(host->weight_tensor()->device());
  return a;
}

std::vector<std::string> GloraConfig::trained_base_parameters(Model& model,
                                                              const std::set<std::string>& adapted) const {
  return bias_parameters(model, bias, ".glora_", adapted);
}

}  // namespace peft
