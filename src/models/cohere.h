// Cohere (CohereForCausalLM: Command-R, Aya): one LayerNorm without bias (computed in float32)
// feeds attention and a SwiGLU MLP in parallel; rotary embeddings in the interleaved form
// (neighbouring features rotate together); optional per-head q/k LayerNorms (use_qk_norm);
// grouped-query attention; the tied head's logits multiplied by logit_scale.
// Cohere 2 (Cohere2ForCausalLM: Command R7B) is the same block with transformers'
// layer_types: sliding-window layers with rotary positions, and global layers without any.
#pragma once

#include "models/attention.h"
#include "models/lm_head.h"
#include "peft/layers.h"
#include "peft/model.h"

namespace peft {

struct CohereConfig {
  std::string arch;  // "Cohere" or "Cohere2": prefixes the type names
  int64_t vocab_size, hidden_size, intermediate_size, num_layers, num_heads, num_kv_heads, head_dim,
      max_position_embeddings;
  double layer_norm_eps, logit_scale;
  std::string hidden_act;
  bool attention_bias, use_qk_norm, tie_word_embeddings;
  nlohmann::json rope;
  int64_t sliding_window = 0;  // Cohere 2: the window of the sliding layers
  std::vector<bool> sliding;   // per layer; Cohere 2's other (global) layers have no rotary
  static CohereConfig from_json(const nlohmann::json& j, const std::string& where, const std::string& arch = "Cohere");
  bool rotary(size_t layer) const { return arch != "Cohere2" || sliding[layer]; }
};

// CohereLayerNorm: (x - mean) / sqrt(var + eps) over the last dimension, times `weight`
// (no bias), in float32. `shape` [dim] or, for the q/k norms, [heads, head_dim].
class CohereLayerNorm : public AdaptableLayer {
 public:
  CohereLayerNorm(std::vector<int64_t> shape, double eps);
  std::string type_name() const override { return "CohereLayerNorm"; }
  LayerKind kind() const override { return LayerKind::kNorm; }
  at::Tensor* weight_tensor() override { return &weight; }
  at::Tensor base_forward(const at::Tensor& x) override;
  int64_t input_dim() const override { return dim_; }
  int64_t output_dim() const override { return dim_; }
  at::Tensor weight;

 private:
  int64_t dim_;
  double eps_;
};

class CohereAttention : public Module {
 public:
  CohereAttention(const CohereConfig& c, bool rotary);
  std::string type_name() const override { return arch_ + "Attention"; }
  at::Tensor forward(const at::Tensor& h, const RotaryEmbedding::Angles& rope, const at::Tensor& mask, KVCache* cache,
                     size_t layer);
  std::shared_ptr<Linear> q_proj, k_proj, v_proj, o_proj;
  std::shared_ptr<CohereLayerNorm> q_norm, k_norm;  // use_qk_norm only

 private:
  std::string arch_;
  bool rotary_;
  int64_t heads_, kv_heads_, head_dim_;
};

class CohereMLP : public AdaptableLayer {  // adaptable: parallel adapters sit beside it
 public:
  explicit CohereMLP(const CohereConfig& c);
  std::string type_name() const override { return "CohereMLP"; }
  LayerKind kind() const override { return LayerKind::kBlock; }
  at::Tensor base_forward(const at::Tensor& x) override;
  int64_t input_dim() const override { return gate_proj->in_features; }
  int64_t output_dim() const override { return down_proj->out_features; }
  std::shared_ptr<Linear> gate_proj, up_proj, down_proj;

 private:
  std::string act_;
};

class CohereDecoderLayer : public Module {
 public:
  CohereDecoderLayer(const CohereConfig& c, size_t index);
  std::string type_name() const override { return arch_ + "DecoderLayer"; }
  bool sliding() const { return sliding_; }
  at::Tensor forward(const at::Tensor& h, const RotaryEmbedding::Angles& rope, const at::Tensor& mask, KVCache* cache,
                     size_t layer);
  std::shared_ptr<CohereAttention> self_attn;
  std::shared_ptr<CohereMLP> mlp;
  std::shared_ptr<CohereLayerNorm> input_layernorm;

 private:
  std::string arch_;
  bool sliding_;
};

class CohereModel : public Module {
 public:
  explicit CohereModel(const CohereConfig& c);
  std::string type_name() const override { return arch_ + "Model"; }
  at::Tensor forward(const ModelInputs& in);
  Embedding& token_embedding() { return *embed_tokens; }
  std::shared_ptr<Embedding> embed_tokens;
  std::shared_ptr<ModuleList<CohereDecoderLayer>> layers;
  std::shared_ptr<CohereLayerNorm> norm;

 private:
  std::string arch_;
  RotaryEmbedding rope_;
  int64_t sliding_window_;
};

class CohereForCausalLM : public CausalLMBase {
 public:
  // `arch` "Cohere" or "Cohere2".
  CohereForCausalLM(const nlohmann::json& j, const std::string& where, const std::string& arch = "Cohere");
  std::string type_name() const override { return cfg_.arch + "ForCausalLM"; }
  ModelOutputs run(const ModelInputs& in) override;
  int64_t num_cache_layers() const override { return cfg_.num_layers; }
  std::string base_model_prefix() const override { return "model"; }
  // The logits are scaled: training and serving take them from run(), not from the head.
  AdaptableLayer* output_layer() override { return cfg_.logit_scale != 1.0 ? nullptr : lm_head.get(); }

  std::shared_ptr<CohereModel> model;

 protected:
  at::Tensor body_forward(const ModelInputs& in) override { return model->forward(in); }
  Embedding& input_embedding() override { return *model->embed_tokens; }

 private:
  CohereForCausalLM(const nlohmann::json& j, CohereConfig cfg);
  CohereConfig cfg_;
};

}  // namespace peft
