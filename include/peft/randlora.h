// RandLoRA (Albert et al. 2025, HF PEFT's RANDLORA): full-rank updates from one pair of
// frozen random bases shared by every adapted layer, scaled per layer by two trainable
// matrices. For a layer with d = min(in, out), D = max(in, out) and n = ceil(d / r) bases:
//   U_A = (lambda[:, :, None] * A[:, :, :d] * gamma[None]).flatten(0, 1)   [r n, d]
//   U_B = B[:D, :n, :].flatten(1)                                          [D, n r]
//   dW = U_B U_A (in >= out: its transpose)  * randlora_alpha / r
// with randlora_A [r, 1, d_max], randlora_B [D_max, n_max, r] sized by the largest targeted
// layer and drawn as HF draws them from `projection_prng_key` (kaiming-uniform in bf16 or
// ternary sparse, each divided by its std), so a file saved without them regenerates exactly.
#pragma once

#include <memory>
#include <string>

#include "peft/tuner.h"

namespace peft {

// The shared frozen bases of one RandLoRA adapter (fp32).
struct RandLoraBases {
  at::Tensor A, B;    // randlora_A [r, 1, min_dim], randlora_B [max_dim, num_bases, r]
  bool saved = true;  // save_projection: written to (and read from) the adapter file
};

enum class RandLoraBasis { kDense, kSparse, kVerySparse };

// HF PEFT's randlora_A / randlora_B for `r` and the largest targeted (out, in), from one CPU
// generator seeded with `key`: kDense draws A then each of the n slices of B with
// kaiming_uniform_(a=sqrt(5)) in bf16 and divides each by its std (in bf16); the sparse
// kinds draw torch.rand and keep -1 / 0 / 1 at thresholds 1/(2s), 1 - 1/(2s) (s = 3, or
// sqrt(min_dim) for kVerySparse), divided by their std. Returned as fp32.
RandLoraBases make_randlora_bases(int64_t r, int64_t max_out, int64_t max_in, uint64_t key, RandLoraBasis kind);

// ceil(min(in, out) / r): the bases a layer needs for a full-rank update.
int64_t randlora_num_bases(int64_t in, int64_t out, int64_t r);

struct RandLoraConfig : AdapterConfig {
  int64_t r = 32;
  uint64_t projection_prng_key = 0;
  bool save_projection = true;
  bool sparse = false;
  bool very_sparse = false;  // wins over sparse, as in HF
  double randlora_dropout = 0.0;
  double randlora_alpha = 640;  // scaling = randlora_alpha / r
  bool fan_in_fan_out = false;  // kept for the file; the host layer knows its own layout
  std::string bias = "none";    // none, all, randlora_only: which biases train
  bool init_weights = true;     // false: lambda ~ N(0, 1), gamma = 1 / max(in, out) (HF's raw init)

  static RandLoraConfig from_json(const nlohmann::ordered_json& j, const std::string& where,
                                  std::vector<std::string>* unknown_keys = nullptr);
  std::string peft_type() const override { return "RANDLORA"; }
  std::unique_ptr<AdapterConfig> clone() const override { return std::make_unique<RandLoraConfig>(*this); }
  nlohmann::ordered_json to_json() const override;
  // Null target_modules take HF's table for the model type (LoRA's: q_proj, v_proj, ...).
  void resolve(const Model& model) override;
  // The targets, and the bases sized to the largest of them (src/tuners/randlora/model.cpp).
  NamedModules layer_targets(Model& model) const override;
  std::shared_ptr<LayerAdapter> make_layer_adapter(const std::string& path, Module& module,
                                                   at::Generator& gen) const override;
  std::vector<std::string> trained_base_parameters(Model& model, const std::set<std::string>& adapted) const override;
  RandLoraBasis basis() const {
    return very_sparse ? RandLoraBasis::kVerySparse : sparse ? RandLoraBasis::kSparse : RandLoraBasis::kDense;
  }

 private:
  // The bases of the adapter being built: layer_targets makes them (they need every
  // target's shape), make_layer_adapter hands them to each layer.
  mutable std::shared_ptr<RandLoraBases> bases_;
};

class RandLoraLayer : public LayerAdapter {
 public:
  // `file_prefix`: the layer's adapter-file key prefix ("base_model.model.<path>."), under
  // which HF also files its reference to the shared bases.
  RandLoraLayer(AdaptableLayer* host, std::shared_ptr<RandLoraBases> bases, int64_t r, double scaling,
                double dropout, std::string file_prefix);
  std::string type_name() const override { return "RandLoraLayer"; }
  at::Tensor forward(const at::Tensor& x, const at::Tensor& out) override;
  void merge() override;
  void unmerge() override;
  std::vector<at::Tensor*> trainable_slots() override { return {&lambda, &gamma}; }
  std::vector<SharedSlot> shared_slots() override;
  // dW [out, in], fp32, scaled, as HF's get_delta_weight (before its fan_in_fan_out transpose).
  at::Tensor delta_weight() const;

  at::Tensor lambda, gamma;  // randlora_lambda [r, n], randlora_gamma [n, min(in, out)]
  int64_t num_bases;
  double scaling, dropout;

 private:
  // HF's get_scaled_bases: the two factors x passes through, x first^T second^T.
  std::pair<at::Tensor, at::Tensor> scaled_bases(at::Device device, at::ScalarType dtype) const;
  std::shared_ptr<RandLoraBases> bases_;
  std::string file_prefix_;
};

}  // namespace peft
