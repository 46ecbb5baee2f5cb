// X-LoRA (HF PEFT 0.21's XLORA, peft/tuners/xlora): several frozen LoRA adapters mixed per
// token by a classifier over the model's last hidden state.
//
// Every forward runs the model twice, as HF's XLoraModel does with forward pre-hooks:
//  1. the scaling pass, without gradients: every adapted layer applies its LoRA experts
//     with "dummy" scalings (all scaling_pass_value; 0 by default, i.e. the base model);
//  2. the classifier (an MLP of xlora_depth Linear layers, ReLU and dropout between them)
//     maps that pass's last hidden state [b, s, hidden] to scalings [b, s, n_layers,
//     n_classes] (one set broadcast to all layers unless layerwise_scalings; a softmax with
//     softmax_temperature when enable_softmax);
//  3. the real pass: layer l adds, per expert column n,
//        B_n A_n dropout(x * g[b, s, l, n]) * scaling_n * global_scaling_weight
//     where g is the layer's scalings after top_k_lora masking (and the softmax over the
//     kept entries with enable_softmax_topk).
// The two passes live in an InputAdapter (the classifier, whose prepare() runs pass 1 and
// the classifier before the model computes pass 3) and one LayerAdapter per adapted layer
// (the experts' factors); they share an XLoraState.
//
// HF's adapter file holds the classifier only ("internal_xlora_classifier.*"); the LoRA
// adapters are read from the folders in `adapters` every time (or from the "<i>/" copies
// HF's save_pretrained writes beside the config, when those folders are gone). HF loads
// adapter i as LoRA "<i>" and activates the names of `adapters`, so the names must be the
// indices "0", "1", ... (HF fails on others; refused here by name).
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "peft/model.h"
#include "peft/side_cache.h"
#include "peft/tuner.h"

namespace peft {

struct LoraConfig;

// One LoRA adapter of the mixture, in the order of `adapters` (expert i is HF's LoRA "<i>").
struct XLoraExpert {
  std::string name;  // its key in `adapters`
  std::string dir;   // absolute folder
  std::shared_ptr<const LoraConfig> lora;
};

// What the classifier and the layers share while a forward runs.
struct XLoraState {
  std::map<std::string, int64_t> layer_number;  // adapted layer path -> HF's layer index
  int64_t n_layers = 0;
  // [b, s, n_layers, n_classes]: the dummy scalings during the scaling pass, then the
  // classifier's; undefined before the first forward (the layers then add every expert
  // unscaled, as HF's layers do without scalings).
  at::Tensor scalings;
  at::Tensor latest;  // the classifier's last scalings (HF's get_latest_scalings)
};

struct XLoraConfig : AdapterConfig {
  int64_t hidden_size = 4096;
  std::vector<XLoraExpert> adapters;
  bool enable_softmax = true;
  bool enable_softmax_topk = false;
  bool layerwise_scalings = false;
  int64_t xlora_depth = 1;
  int64_t xlora_size = 2048;
  double xlora_dropout_p = 0.2;
  bool use_trainable_adapters = false;
  double softmax_temperature = 1.0;
  std::optional<int64_t> top_k_lora;
  double scaling_pass_value = 0.0;
  double global_scaling_weight = 1.0;

  // `adapters` maps names to LoRA adapter folders (relative to the folder of the file
  // `where` names, else to the working directory).
  static XLoraConfig from_json(const nlohmann::ordered_json& j, const std::string& where,
                               std::vector<std::string>* unknown_keys = nullptr);
  std::string peft_type() const override { return "XLORA"; }
  std::unique_ptr<AdapterConfig> clone() const override { return std::make_unique<XLoraConfig>(*this); }
  nlohmann::ordered_json to_json() const override;
  // Every Linear layer some expert adapts, in the model's module order (HF's layer numbers).
  NamedModules layer_targets(Model& model) const override;
  std::shared_ptr<LayerAdapter> make_layer_adapter(const std::string& path, Module& module,
                                                   at::Generator& gen) const override;
  std::shared_ptr<InputAdapter> make_input_adapter(Model& model, at::Generator& gen) const override;
  bool mergeable() const override { return false; }  // the mixture depends on each token
  // HF files the classifier only (XLoraModel._get_adapter_state_dict).
  void to_file_tensors(std::vector<std::pair<std::string, at::Tensor>>& tensors) const override;

  int64_t n_classes() const { return static_cast<int64_t>(adapters.size()); }
  // For each scalings column, the expert HF applies there: the expert whose index is the
  // column's name (-1 where the name is no index; from_json refuses that).
  std::vector<int64_t> column_experts() const;

  std::string where;  // the file or key this config came from, for errors

 private:
  // Made by layer_targets for one add_adapter (configs are cloned per adapter), read by
  // make_layer_adapter and make_input_adapter.
  mutable std::shared_ptr<XLoraState> state_;
  // Expert index -> the layers it adapts.
  mutable std::shared_ptr<std::vector<std::vector<std::string>>> targeted_;
};

// The experts of one Linear layer.
class XLoraLayer : public LayerAdapter {
 public:
  struct Expert {
    at::Tensor A, B;  // [r, in], [out, r]; undefined where the expert skips this layer
    double scaling = 0;
    double dropout = 0;
  };
  XLoraLayer(AdaptableLayer* host, const XLoraConfig& cfg, std::shared_ptr<XLoraState> state, int64_t layer_number,
             std::vector<Expert> experts);
  std::string type_name() const override { return "XLoraLayer"; }
  at::Tensor forward(const at::Tensor& x, const at::Tensor& out) override;
  void merge() override;
  void unmerge() override {}
  std::vector<at::Tensor*> trainable_slots() override;
  // HF's get_maybe_topk_scalings: this layer's scalings [..., n_classes] of `scalings`
  // [b, s, n_layers, n_classes], top-k masked and (enable_softmax_topk) renormalized.
  at::Tensor layer_scalings(const at::Tensor& scalings) const;

  std::vector<Expert> experts;  // by expert index
  int64_t layer_number;

 private:
  std::shared_ptr<XLoraState> state_;
  std::vector<int64_t> column_expert_;
  std::optional<int64_t> top_k_;
  bool softmax_topk_;
  double global_weight_;
  bool trainable_experts_;
};

// The classifier, and the scaling pass in front of every forward.
class XLoraClassifier : public InputAdapter {
 public:
  XLoraClassifier(const XLoraConfig& cfg, std::shared_ptr<XLoraState> state);
  std::string type_name() const override { return "XLoraClassifier"; }
  int64_t prepare(Model& model, ModelInputs& in) override;
  // The scalings [b, s, n_layers, n_classes] of a last hidden state [b, s, hidden].
  at::Tensor classify(const at::Tensor& hidden) const;
  // nn.Linear's default init (kaiming_uniform a=√5, bias U(±1/√fan_in)) from `gen`.
  void initialize(at::Generator& gen);
  XLoraState& state() { return *state_; }

  // The Linear layers of HF's `layers` Sequential, by their index in it.
  struct Dense {
    int64_t index;
    at::Tensor weight, bias;  // [out, in], [out]
  };
  std::vector<Dense> layers;

 private:
  std::shared_ptr<XLoraState> state_;
  int64_t n_classes_, n_layers_;
  bool layerwise_, softmax_;
  double temperature_, dropout_p_, pass_value_;
  // The scaling pass's own keys/values in a cached decode.
  SideCache scaling_cache_;
};

}  // namespace peft
