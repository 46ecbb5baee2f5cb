// WaveFT (HF PEFT 0.21's WAVEFT, wavelet fine-tuning): a layer's weight change is the 2-D
// inverse discrete wavelet transform (one level) of a sparse coefficient matrix, with
// n_frequency trainable coefficients at fixed random positions:
//   C [out + p, in + p] (each side made even) zero but at n entries = waveft_spectrum,
//   placed centred; split into quarters cA | cH over cV | cD; ΔW = scaling · the centred
//   [out, in] crop of waverec2d((cA, (cH, cV, cD)), wavelet_family)
// with p HF's reduction for the family (filter length − 2). Without use_idwt ΔW is the
// sparse matrix itself (times scaling). The positions are the first n of
// torch.randperm(out · in) from a CPU generator seeded with random_loc_seed (row = i / in,
// column = i % in): never saved. init_weights (the default) starts the coefficients at 0.
#pragma once

#include <map>
#include <set>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "peft/tuner.h"

namespace peft {

struct WaveftConfig : AdapterConfig {
  int64_t n_frequency = 2592;
  double scaling = 25.0;
  std::string wavelet_family = "db1";  // db1-db10, sym2-sym10, coif1-coif4 (HF's working filters)
  bool use_idwt = true;
  uint64_t random_loc_seed = 777;      // torch.Generator seed (negative in a file wraps)
  bool fan_in_fan_out = false;         // kept for the file; the host knows its layout
  std::string bias = "none";           // none, all, waveft_only: which base biases train
  bool proportional_parameters = false;  // n_frequency · #layers shared by in · out
  bool init_weights = true;            // false: coefficients N(0, 0.01²)
  // HF's n_frequency_pattern (file order): the first key k with re.match("(.*\.)?(k)$").
  std::vector<std::pair<std::string, int64_t>> n_frequency_pattern;

  static WaveftConfig from_json(const nlohmann::ordered_json& j, const std::string& where,
                                std::vector<std::string>* unknown_keys = nullptr);
  std::string peft_type() const override { return "WAVEFT"; }
  std::unique_ptr<AdapterConfig> clone() const override { return std::make_unique<WaveftConfig>(*this); }
  nlohmann::ordered_json to_json() const override;
  // Null target_modules take HF's table (LoRA's, GPT-2: mlp.c_proj).
  void resolve(const Model& model) override;
  // The targets; with proportional_parameters also each one's share of the budget.
  NamedModules layer_targets(Model& model) const override;
  std::shared_ptr<LayerAdapter> make_layer_adapter(const std::string& path, Module& module,
                                                   at::Generator& gen) const override;
  std::vector<std::string> trained_base_parameters(Model& model, const std::set<std::string>& adapted) const override;
  // The layer's n_frequency: proportional share, else n_frequency_pattern, else n_frequency.
  int64_t n_frequency_for(const std::string& path) const;

 private:
  mutable std::map<std::string, int64_t> proportional_;  // target path -> n_frequency
};

class WaveftLayer : public LayerAdapter {
 public:
  WaveftLayer(AdaptableLayer* host, int64_t n_frequency, const WaveftConfig& c);
  std::string type_name() const override { return "WaveftLayer"; }
  at::Tensor forward(const at::Tensor& x, const at::Tensor& out) override;
  void merge() override;
  void unmerge() override;
  std::vector<at::Tensor*> trainable_slots() override { return {&spectrum}; }
  at::Tensor delta_weight() const;  // [out, in], fp32 (HF's get_delta_weight)

  at::Tensor spectrum;    // [n_frequency]
  at::Tensor rows, cols;  // the coefficients' positions in [out, in] (int64, not saved)
  double scaling;
  std::string wavelet_family;
  bool use_idwt;
};

}  // namespace peft
