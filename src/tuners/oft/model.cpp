// Where OFT goes (HF PEFT's OFTModel): Linear and Embedding targets, each layer's block
// size and count from r / oft_block_size, one OFTLayer each.
#include <ATen/ATen.h>

#include "peft/oft.h"
#include "tuners/config_fields.h"
#include "tuners/injection.h"
#include "tuners/target_match.h"

namespace peft {

int64_t adjust_oft_parameter(int64_t features, int64_t wanted) {
  if (wanted >= features) return features;
  int64_t higher = wanted;
  while (higher <= features && features % higher != 0) ++higher;
  int64_t lower = wanted;
  while (lower > 1 && features % lower != 0) --lower;
  return wanted - lower <= higher - wanted ? lower : higher;
}

void OFTConfig::resolve(const Model& model) {
  if (targets.empty()) targets.target_list = default_targets(model, "OFT", lora_default_targets());
}

NamedModules OFTConfig::layer_targets(Model& model) const { return find_targets(model, targets, task_type); }

std::shared_ptr<LayerAdapter> OFTConfig::make_layer_adapter(const std::string& path, Module& m,
                                                           at::Generator& gen) const {
  auto* host = dynamic_cast<AdaptableLayer*>(&m);
  const bool linear = host && host->kind() == LayerKind::kLinear && !host->weight_is_in_out() && host->weight_tensor();
  const bool embedding = host && host->kind() == LayerKind::kEmbedding && host->weight_tensor();
  if (!linear && !embedding)
    throw std::invalid_argument("OFT: target module '" + path + "' is a " + m.type_name() +
                                "; only Linear and Embedding layers are supported (as in HF PEFT)");
  // The rotated dimension: a Linear's input, an embedding's vectors.
  const int64_t n = linear ? host->input_dim() : host->output_dim();
  int64_t blocks = r, size = oft_block_size;
  if (r == 0) {
    if (n % size != 0 || size > n) size = adjust_oft_parameter(n, size);  // HF warns and adjusts
    blocks = n / size;
  } else {
    if (n % blocks != 0 || blocks > n) blocks = adjust_oft_parameter(n, blocks);
    size = n / blocks;
  }
  auto a = std::make_shared<OFTLayer>(host, blocks, size, *this);
  if (!init_weights) a->weight = at::normal(0.0, 0.1, a->weight.sizes(), gen, at::TensorOptions(at::kFloat));
  a->to(host->weight_tensor()->device());
  return a;
}

std::vector<std::string> OFTConfig::trained_base_parameters(Model& model, const std::set<std::string>& adapted) const {
  return bias_parameters(model, bias, ".oft_", adapted);
}

}  // namespace peft
