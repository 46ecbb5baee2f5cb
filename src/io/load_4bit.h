// Loading and saving Linear layers with 4-bit weights (QLoRA), in the layout transformers
// and bitsandbytes use: the packed codes under the weight's key, the quantization state
// beside it (<key>.absmax, .quant_map, .nested_*, .quant_state.bitsandbytes__nf4), and
// config.json's quantization_config.
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>

#include "peft/model.h"
#include "peft/safetensors.h"

namespace peft {

class CheckpointReader;
class Linear;

// How a model loads 4-bit: from the caller's options, or from a checkpoint saved 4-bit.
// nullopt: full precision. Throws on a quantization_config it cannot honour (8-bit,
// another method) naming config.json.
std::optional<Load4bit> plan_4bit(const nlohmann::json& config, const LoadOptions& opts,
                                  const std::string& config_name);

// The Linear layers to store 4-bit, by parameter name of their weight ("...q_proj.weight"),
// leaving out what transformers keeps in full precision (plan.skip_modules, else its default).
std::map<std::string, Linear*> layers_to_quantize(Model& model, const Load4bit& plan);

// True for the keys bitsandbytes stores beside a 4-bit weight (they load with it).
bool is_quant_state_key(const std::string& key);

// Fills `layer` from the checkpoint key `key`: the stored 4-bit codes and state when the
// checkpoint has them, else the dense weight quantized now.
// `keys`: every key the checkpoint holds; `dtype`: LoadOptions::dtype, applied before
// quantizing (the state then records it, as bnb does).
void load_linear_4bit(const CheckpointReader& ck, const std::set<std::string>& keys, const std::string& key,
                      Linear& layer, const Load4bit& plan, std::optional<at::ScalarType> dtype);

// The model's 4-bit Linear layers, by parameter name of their weight ("...q_proj.weight").
std::map<std::string, Linear*> layers_4bit(Model& model);

// The tensors a 4-bit layer saves under `key` (packed codes and bnb's state keys), and the
// quantization_config config.json then needs (llm_int8_skip_modules lists the full-precision
// Linear layers when they are not transformers' default choice).
void append_4bit_tensors(Linear& layer, const std::string& key, NamedTensors& out);
nlohmann::json quantization_config(Model& model);

}  // namespace peft
