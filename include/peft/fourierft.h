// FourierFT (Gao et al. 2024, HF PEFT's FOURIERFT): a layer's weight change is the real
// part of the 2-D inverse DFT of a sparse spectrum, n trainable coefficients at fixed
// random frequencies:
//   dW = Re(ifft2(S)) * scaling,  S [out, in] zero but at n entries = fourierft_spectrum
// The entries are the first n of torch.randperm(out * in) drawn from a CPU generator
// seeded with random_loc_seed (row = i / in, column = i % in), so they are never saved.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "peft/tuner.h"

namespace peft {

struct FourierFTConfig : AdapterConfig {
  int64_t n_frequency = 1000;
  double scaling = 150.0;
  uint64_t random_loc_seed = 777;
  bool fan_in_fan_out = false;   // kept for the file; the host layer knows its own layout
  std::string bias = "none";     // none, all, fourier_only: which biases train
  bool init_weights = false;     // HF's default: a N(0, 1) spectrum; true: zeros (the base model)
  // HF's n_frequency_pattern: key k applies to modules whose name matches ".*\.k$" (or is k).
  std::map<std::string, int64_t> n_frequency_pattern;

  static FourierFTConfig from_json(const nlohmann::ordered_json& j, const std::string& where,
                                   std::vector<std::string>* unknown_keys = nullptr);
  std::string peft_type() const override { return "FOURIERFT"; }
  std::unique_ptr<AdapterConfig> clone() const override { return std::make_unique<FourierFTConfig>(*this); }
  nlohmann::ordered_json to_json() const override;
  // Null target_modules take HF's table for the model type (GPT-2: mlp.c_proj).
  void resolve(const Model& model) override;
  NamedModules layer_targets(Model& model) const override;
  std::shared_ptr<LayerAdapter> make_layer_adapter(const std::string& path, Module& module,
                                                   at::Generator& gen) const override;
  std::vector<std::string> trained_base_parameters(Model& model, const std::set<std::string>& adapted) const override;
  int64_t n_frequency_for(const std::string& path) const;
};

class FourierFTLayer : public LayerAdapter {
 public:
  FourierFTLayer(AdaptableLayer* host, int64_t n_frequency, double scaling, uint64_t random_loc_seed);
  std::string type_name() const override { return "FourierFTLayer"; }
  at::Tensor forward(const at::Tensor& x, const at::Tensor& out) override;
  void merge() override;
  void unmerge() override;
  std::vector<at::Tensor*> trainable_slots() override { return {&spectrum}; }
  at::Tensor delta_weight() const;  // [out, in], fp32

  at::Tensor spectrum;  // [n_frequency]
  at::Tensor rows, cols;  // the frequencies' positions in [out, in] (int64, not saved)
  double scaling;
};

}  // namespace peft
