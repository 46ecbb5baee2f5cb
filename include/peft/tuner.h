// What every tuner (PEFT method) shares: which modules it touches, the adapter_config.json
// fields all methods have, and how PeftModel asks a method to attach itself.
//
// A method attaches in one or more of three ways:
//  - layer adapters: a LayerAdapter on each targeted layer (LoRA, (IA)3, SSF, bottleneck
//    adapters, LoHa, LoKr);
//  - trainable copies: per-adapter copies of some of a module's parameters that replace
//    the originals while the adapter is active (modules_to_save, LayerNorm tuning, BitFit);
//  - an input adapter: the model's inputs are rewritten (prompt tuning, P-tuning, prefix
//    tuning, visual prompt tuning).
#pragma once

#include <ATen/core/Generator.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "peft/adaptable.h"
#include "peft/model.h"

namespace peft {

// Which modules a tuner wraps: HF PEFT's target_modules / exclude_modules /
// layers_to_transform / layers_pattern / modules_to_save, with its matching rules.
struct TargetSpec {
  // A list matches a module name exactly or as a ".<entry>" suffix; a string is a
  // full-match regex; "all-linear" is every Linear/Conv1D except the output head.
  std::optional<std::vector<std::string>> target_list;
  std::optional<std::string> target_regex;
  std::optional<std::vector<std::string>> exclude_list;
  std::optional<std::string> exclude_regex;
  std::vector<int64_t> layers_to_transform;  // empty: all layers
  std::vector<std::string> layers_pattern;
  std::vector<std::string> modules_to_save;
  bool empty() const { return !target_list && !target_regex; }
};

// Per-adapter copies of a module's parameters (all of them, or the named ones). `infix`
// goes between the module path and the parameter name in adapter files
// ("ln_tuning_layers." for LayerNorm tuning, "" for modules_to_save and BitFit).
struct CopySpec {
  std::string path;
  Module* module;
  std::vector<std::string> params;  // empty: every parameter of the module
  std::string infix;
};

using NamedModules = std::vector<std::pair<std::string, Module*>>;

class AdapterConfig {
 public:
  virtual ~AdapterConfig() = default;
  virtual std::string peft_type() const = 0;  // "LORA", "IA3", ...
  virtual std::unique_ptr<AdapterConfig> clone() const = 0;
  // The adapter_config.json this method writes (HF PEFT's fields, keys sorted).
  virtual nlohmann::ordered_json to_json() const = 0;

  // Completes the config for `model` before anything attaches (sizes of virtual tokens,
  // a default trainable head); what it fills in is saved.
  virtual void resolve(const Model& model) {}
  // Layer adapters: the modules to wrap (default: `targets` matched as HF PEFT does) and
  // the adapter for one of them. `model_type` fills per-architecture default targets.
  virtual NamedModules layer_targets(Model& model) const;
  virtual std::shared_ptr<LayerAdapter> make_layer_adapter(const std::string& path, Module& module,
                                                           at::Generator& gen) const;
  // Trainable copies beyond modules_to_save (which PeftModel handles for every method).
  virtual std::vector<CopySpec> copies(Model& model) const { return {}; }
  // Input adapter, or nullptr. `model` is the base model (embeddings, sizes).
  virtual std::shared_ptr<InputAdapter> make_input_adapter(Model& model, at::Generator& gen) const { return nullptr; }
  // What adapter file keys of modules start with: HF PEFT wraps the model in a tuner
  // model ("base_model.model.") for most methods, not for prompt learning ("base_model.").
  virtual std::string key_prefix() const { return "base_model.model."; }
  // Whether merge() can fold this method into the base weights.
  virtual bool mergeable() const { return true; }
  // Base parameters (by model name) this adapter trains and saves with itself, such as
  // LoRA's biases; `adapted` holds the paths of the layers it attaches to.
  virtual std::vector<std::string> trained_base_parameters(Model& model, const std::set<std::string>& adapted) const {
    return {};
  }
  // The config to build when saved weights are about to be loaded into the adapter
  // (LoRA: a plain init, so that PiSSA/OLoRA do not rewrite the base while loading).
  virtual std::unique_ptr<AdapterConfig> for_loading() const { return clone(); }
  // Parameters HF PEFT's layers of this method hold beyond what adapter files carry, per
  // adapted layer (AdaLoRA's frozen `ranknum`); HF counts them in "all params".
  virtual int64_t unsaved_parameters_per_layer() const { return 0; }
  // The adapter file's tensors, from the adapter's own under their file keys (HF PEFT's
  // _get_adapter_state_dict): AdaLoRA cuts out the ranks its rank_pattern masks.
  virtual void to_file_tensors(std::vector<std::pair<std::string, at::Tensor>>& tensors) const {}

  // Training hooks, for methods that change themselves as they train (AdaLoRA's rank
  // allocation); nothing for most. begin_training: the run's number of optimizer steps.
  // after_optimizer_step: after each optimizer step, before the gradients are cleared,
  // with HF Trainer's global_step at that point (0 after the first step), on the adapter's
  // layers by path; it may change them and this config (what it saves).
  using AdaptedLayers = std::vector<std::pair<std::string, LayerAdapter*>>;
  virtual void begin_training(int64_t total_steps) {}
  virtual void after_optimizer_step(const AdaptedLayers& layers, int64_t global_step) {}

  TargetSpec targets;
  std::string task_type;  // "", "CAUSAL_LM", "SEQ_CLS", ...
  std::string base_model_name_or_path;
  // False while training: prompt encoders (P-tuning, prefix projection) then run their
  // reparameterization; true (as in saved files) uses the saved embeddings directly.
  bool inference_mode = true;
  // Every key of the file this config came from, so saving keeps what we do not model.
  nlohmann::ordered_json source;
};

// Parses adapter_config.json content for any supported peft_type; `where` names the file
// in errors; unknown keys are kept and listed in `unknown_keys`.
std::unique_ptr<AdapterConfig> parse_adapter_config(const nlohmann::ordered_json& j, const std::string& where,
                                                    std::vector<std::string>* unknown_keys = nullptr);
// The same for a config a user wrote (peft train's "method", --method): an unknown key is
// a typo, so it is an error with the nearest known key.
std::unique_ptr<AdapterConfig> parse_user_adapter_config(const nlohmann::ordered_json& j, const std::string& where);
// The peft_type values parse_adapter_config accepts.
std::vector<std::string> supported_peft_types();

}  // namespace peft
