// Mixture-of-experts decoders: MixtralForCausalLM and Qwen3MoeForCausalLM (Qwen3's
// attention with q/k norms; dense MLP layers where mlp_only_layers / decoder_sparse_step
// say). LLaMA's attention with a sparse MLP in transformers 5's layout: a top-k router
// `mlp.gate` (<Arch>TopKRouter, weight [experts, hidden]) and the experts stacked in two
// 3-D parameters, `mlp.experts.gate_up_proj` [experts, 2 * intermediate, hidden] (gate
// rows, then up) and `mlp.experts.down_proj` [experts, hidden, intermediate].
// Checkpoints written by transformers keep per-expert names; the loader stacks them
// (src/io/expert_keys.cpp). Adapters reach the experts through HF PEFT's
// target_parameters (peft/param_layer.h).
#pragma once

#include "models/attention.h"
#include "models/lm_head.h"
#include "models/llama.h"
#include "models/model_config.h"
#include "peft/layers.h"
#include "peft/model.h"
#include "peft/param_layer.h"

namespace peft {

struct MoeConfig : LlamaConfig {  // arch "Mixtral" or "Qwen3Moe"
  int64_t num_experts, top_k, moe_intermediate_size;
  bool norm_topk_prob;          // renormalize the top-k probabilities (Mixtral: always)
  bool experts_first;           // Qwen3Moe registers experts before the router
  std::vector<bool> sparse;     // per layer: MoE (true) or a dense MLP
  static MoeConfig from_json(const nlohmann::json& j, const std::string& arch, const std::string& where);
};

class MoeTopKRouter : public Module {
 public:
  explicit MoeTopKRouter(const MoeConfig& c);
  std::string type_name() const override { return arch_ + "TopKRouter"; }
  // The routing of tokens x [tokens, hidden]: weights [tokens, k] (float32, summing to 1)
  // and expert indices [tokens, k].
  std::pair<at::Tensor, at::Tensor> forward(const at::Tensor& x);
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
  at::Tensor forward(const at::Tensor& h);
  std::shared_ptr<MoeTopKRouter> gate;
  std::shared_ptr<MoeExperts> experts;

 private:
  std::string arch_;
};

class MoeDecoderLayer : public Module {
 public:
  MoeDecoderLayer(const MoeConfig& c, bool sparse);
  std::string type_name() const override { return arch_ + "DecoderLayer"; }
  at::Tensor forward(const at::Tensor& h, const RotaryEmbedding::Angles& rope, const at::Tensor& mask,
                     KVCache* cache, size_t layer);
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
  std::shared_ptr<Embedding> embed_tokens;
  std::shared_ptr<ModuleList<MoeDecoderLayer>> layers;
  std::shared_ptr<RMSNorm> norm;

 private:
  std::string arch_;
  RotaryEmbedding rope_;
  int64_t sliding_window_;  // 0: none; else every layer's window
};

class MoeForCausalLM : public CausalLMBase {
 public:
  MoeForCausalLM(const nlohmann::json& j, const std::string& arch, const std::string& where);
  std::string type_name() const override { return cfg_.arch + "ForCausalLM"; }
  int64_t num_cache_layers() const override { return cfg_.num_layers; }
  std::string base_model_prefix() const override { return "model"; }

  std::shared_ptr<MoeModel> model;

 protected:
  at::Tensor body_forward(const ModelInputs& in) override { return model->forward(in); }
  Embedding& input_embedding() override { return *model->embed_tokens; }

 private:
  MoeForCausalLM(const nlohmann::json& j, MoeConfig cfg);
  MoeConfig cfg_;
};

}  // namespace peft
