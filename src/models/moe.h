// Mixture-of-experts decoders: MixtralForCausalLM, Qwen2MoeForCausalLM (q/k/v bias, a
// shared expert behind a sigmoid gate) and Qwen3MoeForCausalLM (Qwen3's attention with
// q/k norms); the Qwen ones have dense MLP layers where mlp_only_layers /
// decoder_sparse_step say. LLaMA's attention with a sparse MLP in transformers 5's layout: a top-k router
// `mlp.gate` (<Arch>TopKRouter, weight [experts, hidden]) and the experts stacked in two
// 3-D parameters, `mlp.experts.gate_up_proj` [experts, 2 * intermediate, hidden] (gate
// rows, then up) and `mlp.experts.down_proj` [experts, hidden, intermediate].
// Checkpoints written by transformers keep per-expert names; the loader stacks them
// (src/io/expert_keys.cpp). Adapters reach the experts through HF PEFT's
// target_parameters (peft/param_layer.h). With output_router_logits the router
// load-balancing loss of the last forward is the model's aux_loss() (times
// router_aux_loss_coef), which training adds to the LM loss as transformers does.
#pragma once

#include "models/attention.h"
#include "models/lm_head.h"
#include "models/llama.h"
#include "models/model_config.h"
#include "peft/layers.h"
#include "peft/model.h"
#include "peft/param_layer.h"

namespace peft {

struct MoeConfig : LlamaConfig {  // arch "Mixtral", "Qwen2Moe" or "Qwen3Moe"
  int64_t num_experts, top_k, moe_intermediate_size;
  int64_t shared_expert_intermediate_size = 0;  // Qwen2Moe's shared expert (0: none)
  bool norm_topk_prob;          // renormalize the top-k probabilities (Mixtral: always)
  bool experts_first;           // Qwen3Moe registers experts before the router
  std::vector<bool> sparse;     // per layer: MoE (true) or a dense MLP
  bool output_router_logits = false;  // add the load-balancing loss in training
  double router_aux_loss_coef = 0.001;
  static MoeConfig from_json(const nlohmann::json& j, const std::string& arch, const std::string& where);
};

class MoeTopKRouter : public Module {
 public:
  explicit MoeTopKRouter(const MoeConfig& c);
  std::string type_name() const override { return arch_ + "TopKRouter"; }
  // The routing of tokens x [tokens, hidden]: weights [tokens, k] (float32, summing to 1)
  // and expert indices [tokens, k]; the router logits [tokens, experts] go to `logits`.
  std::pair<at::Tensor, at::Tensor> forward(const at::Tensor& x, at::Tensor* logits = nullptr);
  at::Tensor weight;

 private:
  std::string arch_;
  int64_t top_k_;
  bool norm_;
};

class MoeExperts : public ParamAdaptableLayer {
 public:
  explicit MoeExperts(const MoeConfig& c);
  std::string type_name() const override { return arch_ + "Experts"; }
  // sum over each token's k experts of weight * down(act(gate(x)) * up(x)). Tokens are
  // grouped by expert (one stable sort), so each expert runs its products once on all of
  // its tokens.
  at::Tensor forward(const at::Tensor& x, const at::Tensor& top_k_index, const at::Tensor& top_k_weights);
  at::Tensor base_forward(const at::Tensor&) override;  // needs the routing: refused
  int64_t input_dim() const override { return hidden_; }
  int64_t output_dim() const override { return hidden_; }
  at::Tensor gate_up_proj, down_proj;

 private:
  std::string arch_;
  int64_t experts_, hidden_, intermediate_;
  std::string act_;
};

class MoeSparseBlock : public Module {
 public:
  explicit MoeSparseBlock(const MoeConfig& c);
  std::string type_name() const override { return arch_ + "SparseMoeBlock"; }
  // With router_logits, appends this block's router logits to it.
  at::Tensor forward(const at::Tensor& h, std::vector<at::Tensor>* router_logits = nullptr);
  std::shared_ptr<MoeTopKRouter> gate;
  std::shared_ptr<MoeExperts> experts;
  // Qwen2Moe: a dense MLP every token goes through, scaled by sigmoid(shared_expert_gate(x)).
  std::shared_ptr<LlamaMLP> shared_expert;
  std::shared_ptr<Linear> shared_expert_gate;

 private:
  std::string arch_;
};

class MoeDecoderLayer : public Module {
 public:
  MoeDecoderLayer(const MoeConfig& c, bool sparse);
  std::string type_name() const override { return arch_ + "DecoderLayer"; }
  at::Tensor forward(const at::Tensor& h, const RotaryEmbedding::Angles& rope, const at::Tensor& mask,
                     KVCache* cache, size_t layer, std::vector<at::Tensor>* router_logits = nullptr);
  std::shared_ptr<LlamaAttention> self_attn;
  std::shared_ptr<MoeSparseBlock> mlp;     // sparse layers
  std::shared_ptr<LlamaMLP> dense_mlp;     // the others (also named "mlp")
  std::shared_ptr<RMSNorm> input_layernorm, post_attention_layernorm;

 private:
  std::string arch_;
};

class MoeModel : public Module {
 public:
  explicit MoeModel(const MoeConfig& c);
  std::string type_name() const override { return arch_ + "Model"; }
  at::Tensor forward(const ModelInputs& in);
  // transformers' load_balancing_loss_func over the router logits of the last forward
  // without a cache (padding excluded by the attention mask); undefined unless
  // output_router_logits.
  const at::Tensor& router_loss() const { return router_loss_; }
  std::shared_ptr<Embedding> embed_tokens;
  std::shared_ptr<ModuleList<MoeDecoderLayer>> layers;
  std::shared_ptr<RMSNorm> norm;

 private:
  std::string arch_;
  RotaryEmbedding rope_;
  int64_t sliding_window_;  // 0: none; else every layer's window
  bool router_logits_;
  int64_t experts_, top_k_;
  at::Tensor router_loss_;
};

class MoeForCausalLM : public CausalLMBase {
 public:
  MoeForCausalLM(const nlohmann::json& j, const std::string& arch, const std::string& where);
  std::string type_name() const override { return cfg_.arch + "ForCausalLM"; }
  int64_t num_cache_layers() const override { return cfg_.num_layers; }
  std::string base_model_prefix() const override { return "model"; }
  // router_aux_loss_coef times the router load-balancing loss (output_router_logits).
  at::Tensor aux_loss() const override;

  std::shared_ptr<MoeModel> model;

 protected:
  at::Tensor body_forward(const ModelInputs& in) override { return model->forward(in); }
  Embedding& input_embedding() override { return *model->embed_tokens; }

 private:
  MoeForCausalLM(const nlohmann::json& j, MoeConfig cfg);
  MoeConfig cfg_;
};

}  // namespace peft
