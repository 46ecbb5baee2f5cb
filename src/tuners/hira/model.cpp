// Where HiRA goes (HF PEFT's HiraModel): Linear, Conv1D and Embedding targets, LoRA's
// default table, HF's inits. HF's Conv1d/2d/3d branch waits: our
// convolution hosts (ViT's patch embedding) are not adaptable layers.
#include <ATen/ATen.h>

#include <iostream>
#include <stdexcept>

#include "peft/hira.h"
#include "tuners/config_fields.h"
#include "tuners/init_draws.h"
#include "tuners/injection.h"
#include "tuners/target_match.h"

namespace peft {

void HiraConfig::resolve(const Model& model) {
  if (targets.empty()) targets.target_list = default_targets(model, "HIRA", lora_default_targets());
  if (!rank_pattern.empty())
    std::cerr << "warning: HIRA: rank_pattern is kept in the file, but every layer gets r = " << r
              << ", as in HF PEFT 0.21 (whose HiRA layers are built from r alone)\n";
}

NamedModules HiraConfig::layer_targets(Model& model) const { return find_targets(model, targets, task_type); }

std::shared_ptr<LayerAdapter> HiraConfig::make_layer_adapter(const std::string& path, Module& m,
                                                            at::Generator& gen) const {
  auto* host = dynamic_cast<AdaptableLayer*>(&m);
  const bool embedding = host && host->kind() == LayerKind::kEmbedding && host->weight_tensor();
  if (!embedding && !(host && host->kind() == LayerKind::kLinear && host->weight_tensor()))
    throw std::invalid_argument("HIRA: target module '" + path + "' is a " + m.type_name() +
                                "; only Linear, Conv1D and Embedding layers are supported");
  const int64_t rank = r;  // HF's dispatch_default reads config.r, not the rank_pattern it computed
  auto a = std::make_shared<HiraLayer>(host, rank, hira_dropout, embedding);
  const int64_t in = host->input_dim(), out = host->output_dim();
  const auto f32 = at::TensorOptions(at::kFloat);
  if (init_weights == "false") {  // HF: torch.randn for both, left as drawn
    a->A = at::empty({rank, in}, f32).normal_(0, 1, gen);
    a->B = at::empty({out, rank}, f32).normal_(0, 1, gen);
  } else if (embedding) {
    a->B = at::empty({out, rank}, f32).normal_(0, 1, gen);
  } else {
    a->A = init_weights == "gaussian" ? at::empty({rank, in}, f32).normal_(0, 1.0 / static_cast<double>(rank), gen)
                                      : kaiming_uniform_sqrt5(rank, in, gen);
  }
  a->to(host->weight_tensor()->device());
  return a;
}

}  // namespace peft
