// LoRA: config (HF PEFT's adapter_config.json fields) and the adapters it attaches.
#pragma once

#include <ATen/core/Tensor.h>

#include <nlohmann/json.hpp>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "peft/adaptable.h"
#include "peft/param_layer.h"
#include "peft/tuner.h"

namespace peft {

struct TokenPlan;  // src/tuners/trainable_tokens/plan.h

struct LoraConfig : AdapterConfig {
  int64_t r = 8;
  double lora_alpha = 8;
  double lora_dropout = 0.0;
  std::string bias = "none";  // none | all | lora_only
  bool fan_in_fan_out = false;
  bool use_rslora = false;
  bool use_dora = false;
  // "true" (kaiming A, zero B), "false" (both random), "gaussian", "pissa", "pissa_niter_N",
  // "olora", "loftq", "orthogonal", "corda", "lora_ga", "eva"
  std::string init_lora_weights = "true";
  int64_t loftq_iter = 1;  // loftq_config's: alternating NF4 / SVD steps (loftq_bits must be 4)
  // Data-driven inits: what a calibration pass measured per target, by module path, which
  // add_adapter needs: CorDA's input covariance C [in, in] (src/tuners/lora/corda.h),
  // LoRA-GA's averaged loss gradient of the weight [out, in] (src/tuners/lora/lora_ga.h),
  // EVA's principal components of the inputs, lora_A itself [r, in] (src/tuners/lora/eva.h).
  std::shared_ptr<const std::map<std::string, at::Tensor>> calibration;
  // init "eva" (eva_config, HF's EvaConfig): a layer may get up to round(r * rho) of the
  // rank budget; a component has converged when its cosine similarity between two batches
  // reaches tau; rows whose label is label_mask_value are left out when use_label_mask;
  // whiten divides components by √(singular value); adjust_scaling_factors keeps
  // alpha / r where EVA changes a layer's rank.
  struct EvaOptions {
    double rho = 2.0, tau = 0.99;
    bool use_label_mask = true;
    int64_t label_mask_value = -100;
    bool whiten = false, adjust_scaling_factors = true;
  } eva;
  // init "corda" (corda_config's corda_method): the adapter starts from the largest ("ipm")
  // or smallest ("kpm") singular components of W C.
  std::string corda_method = "ipm";
  // init "lora_ga" (lora_ga_config): which singular vectors of the gradient A and B take,
  // and how B is scaled.
  std::string lora_ga_direction = "ArB2r", lora_ga_scale = "stable";  // ArBr A2rBr ArB2r random; stable weight_svd gd_scale unit
  int64_t lora_ga_stable_gamma = 16;
  std::vector<std::pair<std::string, int64_t>> rank_pattern;   // regex -> r, in file order
  std::vector<std::pair<std::string, double>> alpha_pattern;   // regex -> alpha
  bool lora_fa = false;  // LoRA-FA: A stays frozen after init, only B trains (not an HF key)
  bool lora_bias = false;  // HF's lora_bias: lora_B with a bias (inits true / false only; not DoRA)
  // HF PEFT's target_parameters: "<module>.<parameter>" names (matched exactly or as a
  // ".<entry>" suffix) of parameters of ParamAdaptableLayers (stacked expert weights),
  // each adapted by a LoraParamWrapper.
  std::optional<std::vector<std::string>> target_parameters;
  // HF PEFT's trainable_token_indices: null, a list of token ids (rows of the input
  // embedding) or {module name: list}; those rows train beside LoRA, the layers tied to
  // the embedding following them (include/peft/trainable_tokens.h).
  nlohmann::ordered_json trainable_token_indices;
  bool ensure_weight_tying = false;

  // Parses adapter_config.json content; `where` names the file in errors. Keys we do not
  // know are kept and reported in `unknown_keys` (HF PEFT warns about them too). Without
  // target_modules, resolve() picks HF PEFT's default targets for the architecture.
  static LoraConfig from_json(const nlohmann::ordered_json& j, const std::string& where,
                              std::vector<std::string>* unknown_keys = nullptr);
  // The adapter_config.json HF PEFT writes: all its LoRA fields, keys sorted.
  nlohmann::ordered_json to_json() const override;
  std::string peft_type() const override { return "LORA"; }
  std::unique_ptr<AdapterConfig> clone() const override { return std::make_unique<LoraConfig>(*this); }
  void resolve(const Model& model) override;
  // bias "all": every bias of the model; "lora_only": the adapted layers' biases.
  std::vector<std::string> trained_base_parameters(Model& model, const std::set<std::string>& adapted) const override;
  std::unique_ptr<AdapterConfig> for_loading() const override;
  NamedModules layer_targets(Model& model) const override;
  std::shared_ptr<LayerAdapter> make_layer_adapter(const std::string& path, Module& module,
                                                   at::Generator& gen) const override;

  // LoRA on the targeted parameters of `host` (target_parameters).
  std::shared_ptr<LayerAdapter> make_param_wrapper(const std::string& path, ParamAdaptableLayer& host,
                                                   at::Generator& gen) const;
  // Rank and alpha for one module (rank_pattern / alpha_pattern applied), and the scale.
  int64_t rank_for(const std::string& module) const;
  double alpha_for(const std::string& module) const;
  double scaling_for(const std::string& module) const;

 private:
  // trainable_token_indices' layers appended to `out` (refused where LoRA targets them too).
  void add_token_targets(Model& model, NamedModules& out) const;
  // Which layers get token rows, made by layer_targets for one add_adapter (configs are
  // cloned per adapter) and read by make_layer_adapter (tied layers share rows).
  mutable std::shared_ptr<TokenPlan> token_plan_;
};

// LoRA on a layer computing x -> x W^T with W [out, in] (Linear, GPT-2's Conv1D with
// fan_in_fan_out): out += B(A(dropout(x))) * scaling, or DoRA's rescaled form.
class LoraLinear : public LayerAdapter {
 public:
  LoraLinear(AdaptableLayer* host, int64_t in, int64_t out, int64_t r, double scaling, double dropout,
             bool use_dora, bool fan_in_fan_out);
  std::string type_name() const override { return "LoraLinear"; }
  at::Tensor forward(const at::Tensor& x, const at::Tensor& out) override;
  bool reads_host_weight() const override { return use_dora; }
  std::optional<LowRank> low_rank() const override;
  bool set_scale(double multiplier) override;
  void merge() override;
  void unmerge() override;
  std::vector<at::Tensor*> trainable_slots() override;
  // Initializes A and B (and DoRA's magnitude) as `init` says; pissa/olora rewrite W.
  void initialize(const std::string& init, bool use_dora, at::Generator& gen);
  at::Tensor delta_weight() const;  // scaling * B A, as [out, in]

  // HF's lora_bias: lora_B gets a trained bias [out] ("lora_B.bias"), added times scaling.
  void add_bias();
  at::Tensor lora_A, lora_B, magnitude;  // [r, in], [out, r], [out]
  at::Tensor lora_bias;                  // undefined unless add_bias()
  double scaling, dropout;
  bool use_dora, fan_in_fan_out, freeze_A = false;
  int64_t loftq_iter = 1;  // init "loftq": NF4 / SVD alternations
  at::Tensor calibration;  // data-driven inits: the layer's entry of LoraConfig::calibration
  std::string corda_method = "ipm";
  std::string lora_ga_direction = "ArB2r", lora_ga_scale = "stable";
  int64_t lora_ga_stable_gamma = 16;

 private:
  at::Tensor host_weight() const;  // the base weight's values as stored ([out, in] or [in, out])
  at::Tensor host_weight_out_in() const;
  void set_host_weight_out_in(const at::Tensor& w_out_in);  // values, transposed back as stored
  at::Tensor host_bias() const;
  at::Tensor dora_weight_norm(const at::Tensor& delta) const;
  void init_lora_ga(int64_t r, at::Generator& gen);  // init "lora_ga" from `calibration`
  void merge_bias(int sign);
  at::Tensor merged_weight_norm_;  // DoRA: the norm used at merge time, to unmerge exactly
  std::optional<double> unscaled_;  // scaling before the first set_scale
};

// HF PEFT's lora.ParamWrapper: LoRA on parameters of a ParamAdaptableLayer, one factor
// pair per targeted parameter. A 3-D parameter [E, out, in] gets A [r*E, in] (rows
// expert-major) and B [out, r*E] (columns rank-major), expert e's update being
// scaling * B[:, e::E] A[e*r:(e+1)*r]; a 2-D one [out, in] plain A [r, in], B [out, r].
// HF PEFT nests one wrapper per parameter, the first registered innermost, so the
// parameter i of n targeted files its factors under ("base_layer." x (n-1-i)) "lora_A.weight".
class LoraParamWrapper : public ParamAdapter {
 public:
  struct Target {
    std::string name;
    int64_t experts, in, out, r;  // experts 1: a 2-D parameter
    double scaling;
    at::Tensor lora_A, lora_B;
    std::optional<double> unscaled;
  };
  LoraParamWrapper(ParamAdaptableLayer* host, std::vector<Target> targets);
  std::string type_name() const override { return "LoraParamWrapper"; }
  std::optional<SliceFactors> factors(const std::string& name, int64_t index) const override;
  bool set_scale(double multiplier) override;
  void merge() override;
  void unmerge() override;
  std::vector<at::Tensor*> trainable_slots() override;
  void initialize(const std::string& init, at::Generator& gen);
  at::Tensor delta(const Target& t) const;  // the parameter's shape: HF's get_delta_weight

  std::vector<Target> targets;
};

// LoRA on an embedding: out += embed(ids, A^T) B^T * scaling; A [r, vocab], B [dim, r].
class LoraEmbedding : public LayerAdapter {
 public:
  LoraEmbedding(AdaptableLayer* host, int64_t num_embeddings, int64_t dim, int64_t r, double scaling);
  std::string type_name() const override { return "LoraEmbedding"; }
  at::Tensor forward(const at::Tensor& ids, const at::Tensor& out) override;
  bool set_scale(double multiplier) override;
  void merge() override;
  void unmerge() override;
  std::vector<at::Tensor*> trainable_slots() override;
  void initialize(const std::string& init, at::Generator& gen);
  at::Tensor delta_weight() const;  // [vocab, dim]

  at::Tensor lora_embedding_A, lora_embedding_B;
  double scaling;

 private:
  std::optional<double> unscaled_;
};

}  // namespace peft
