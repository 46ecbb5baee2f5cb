// LoRA-GA (Wang et al. 2024, HF PEFT's init_lora_weights "lora_ga"): the adapter starts
// aligned with the first step of full fine-tuning. A calibration pass estimates each
// target weight's loss gradient; LoraLinear then takes A and B from its singular vectors
// (lora_ga_config's direction and scale) and the layer keeps W - scaling · B A.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <map>
#include <string>

#include "peft/lora.h"

namespace peft {

// HF's estimate_gradients: only `config`'s Linear targets' weights require grad while
// `train_step` runs forwards and backwards (each batch's mean loss); each weight's
// accumulated gradient is divided by the number of backward passes through it (here: its
// forwards), returned [out, in] by module path.
std::map<std::string, at::Tensor> lora_ga_gradients(Model& model, const LoraConfig& config,
                                                   const std::function<void()>& train_step);

}  // namespace peft
