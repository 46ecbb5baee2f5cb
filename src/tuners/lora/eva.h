// EVA (Paischer et al. 2024, HF PEFT's init_lora_weights "eva"): explained variance
// adaptation. A calibration pass runs an incremental PCA of each Linear target's inputs
// over batches of the data until the components a layer needs stop moving; lora_A starts
// as those components and lora_B at zero. The rank budget (the sum of the layers' r) is
// then given out by explained variance across layers, up to round(r * rho) each, so a
// layer may get more rank than r, less, or none (it is then not adapted).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include "peft/lora.h"

namespace peft {

// The calibration data: `num_batches` batches taken in a cycle (HF's itertools.cycle over
// the dataloader). `token_mask(i)` is batch i's [b, s] bool mask of the input rows that
// enter the PCA (HF's prepare_model_inputs_fn_language_modeling: the attention mask,
// without label_mask_value labels when use_label_mask); `forward(i)` runs the model on it.
struct EvaData {
  size_t num_batches = 0;
  std::function<at::Tensor(size_t)> token_mask;
  std::function<void(size_t)> forward;
};

// HF's get_eva_state_dict: probes on `config`'s Linear / Conv1D targets; layers whose
// first-batch inputs are equal (q, k, v) share one PCA. Runs at most `max_forwards`
// forwards after the first; a layer not converged by then keeps its latest components
// (with a warning on stderr; HF would loop on). Returns, by module path, each layer's
// lora_A [rank, in] (float32, CPU; rank 0 for the layers EVA leaves out).
std::map<std::string, at::Tensor> eva_components(Model& model, const LoraConfig& config, const EvaData& data,
                                                 int64_t max_forwards = 1000);

// HF's _load_eva_state_dict on a config before add_adapter: `components` become the
// calibration lora_A takes; each layer's new rank goes to rank_pattern (where it is not r),
// alpha to alpha_pattern (alpha * new / old rank with adjust_scaling_factors, where it is not
// lora_alpha); layers given no rank leave target_modules, which becomes the explicit list of
// the adapted module paths.
void apply_eva(Model& model, LoraConfig& config, std::map<std::string, at::Tensor> components);

}  // namespace peft
