// Where TRAINABLE_TOKENS goes (HF PEFT's TrainableTokensModel): its targets (by default
// the input embedding), and with tied weights the layers tied to the embedding, sharing
// its rows.
#include "peft/trainable_tokens.h"
#include "tuners/target_match.h"
#include "tuners/trainable_tokens/plan.h"

namespace peft {

void TrainableTokensConfig::resolve(const Model& model) {
  // HF's _prepare_adapter_config: the input embedding's name, as a string (a regex that
  // matches that one name). The lookup only reads the model.
  if (targets.empty()) targets.target_regex = input_embedding_path(const_cast<Model&>(model), "embed_tokens");
}

NamedModules TrainableTokensConfig::layer_targets(Model& model) const {
  if (!targets.modules_to_save.empty())
    throw std::invalid_argument("TRAINABLE_TOKENS has no modules_to_save");
  plan_ = plan_trainable_tokens(model, find_targets(model, targets, task_type), token_indices, init_weights);
  return plan_->modules(model);
}

std::shared_ptr<LayerAdapter> TrainableTokensConfig::make_layer_adapter(const std::string& path, Module& module,
                                                                       at::Generator& gen) const {
  return plan_->make(path, module, gen);
}

}  // namespace peft
