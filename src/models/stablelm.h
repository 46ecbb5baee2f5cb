// StableLM (StableLmForCausalLM: stablelm-2, stablelm-3b-4e1t, stablelm-zephyr): LLaMA's
// projections and SwiGLU MLP with LayerNorms, rotary on the first partial_rotary_factor of
// each head (default 0.25), optional q/k/v biases, optional per-head LayerNorms (without
// bias) on queries and keys, sequential or parallel residual.
#pragma once

#include "models/attention.h"
#include "models/lm_head.h"
#include "peft/layers.h"
#include "peft/model.h"

namespace peft {

struct StableLmConfig {
  int64_t vocab_size, hidden_size, intermediate_size, num_layers, num_heads, num_kv_heads, head_dim,
      max_position_embeddings;
  double layer_norm_eps;
  std::string hidden_act;
  bool use_qkv_bias, qk_layernorm, use_parallel_residual, tie_word_embeddings;
  nlohmann::json rope;
  static StableLmConfig from_json(const nlohmann::json& j, const std::string& where);
};

// One LayerNorm without bias per head over [b, heads, s, d] (StableLmLayerNormPerHead).
class StableLmLayerNormPerHead : public Module {
 public:
  StableLmLayerNormPerHead(int64_t dim, int64_t heads, double eps);
  std::string type_name() const override { return "StableLmLayerNormPerHead"; }
  at::Tensor forward(const at::Tensor& x);

 private:
  class Norm : public Module {
   public:
    Norm(int64_t dim, double eps);
    std::string type_name() const override { return "LayerNorm"; }
    at::Tensor forward(const at::Tensor& x) const { return at::layer_norm(x, {weight.size(0)}, weight, {}, eps_); }
    at::Tensor weight;

   private:
    double eps_;
  };
  std::shared_ptr<ModuleList<Norm>> norms_;
};

class StableLmAttention : public Module {
 public:
  explicit StableLmAttention(const StableLmConfig& c);
  std::string type_name() const override { return "StableLmAttention"; }
  at::Tensor forward(const at::Tensor& h, const RotaryEmbedding::Angles& rope, const at::Tensor& mask,
                     KVCache* cache, size_t layer);
  std::shared_ptr<Linear> q_proj, k_proj, v_proj, o_proj;
  std::shared_ptr<StableLmLayerNormPerHead> q_layernorm, k_layernorm;  // with qk_layernorm only

 private:
  int64_t heads_, kv_heads_, head_dim_;
};

class StableLmMLP : public AdaptableLayer {  // adaptable: parallel adapters sit beside it
 public:
  explicit StableLmMLP(const StableLmConfig& c);
  std::string type_name() const override { return "StableLmMLP"; }
  LayerKind kind() const override { return LayerKind::kBlock; }
  at::Tensor base_forward(const at::Tensor& x) override;
  int64_t input_dim() const override { return gate_proj->in_features; }
  int64_t output_dim() const override { return down_proj->out_features; }
  std::shared_ptr<Linear> gate_proj, up_proj, down_proj;

 private:
  std::string act_;
};

class StableLmDecoderLayer : public Module {
 public:
  explicit StableLmDecoderLayer(const StableLmConfig& c);
  std::string type_name() const override { return "StableLmDecoderLayer"; }
  at::Tensor forward(const at::Tensor& h, const RotaryEmbedding::Angles& rope, const at::Tensor& mask,
                     KVCache* cache, size_t layer);
  std::shared_ptr<StableLmAttention> self_attn;
  std::shared_ptr<StableLmMLP> mlp;
  std::shared_ptr<LayerNorm> input_layernorm, post_attention_layernorm;  // the latter: sequential only
};

class StableLmModel : public Module {
 public:
  explicit StableLmModel(const StableLmConfig& c);
  std::string type_name() const override { return "StableLmModel"; }
  at::Tensor forward(const ModelInputs& in);
  Embedding& token_embedding() { return *embed_tokens; }
  std::shared_ptr<Embedding> embed_tokens;
  std::shared_ptr<ModuleList<StableLmDecoderLayer>> layers;
  std::shared_ptr<LayerNorm> norm;

 private:
  RotaryEmbedding rope_;
};

class StableLmForCausalLM : public CausalLMBase {
 public:
  StableLmForCausalLM(const nlohmann::json& j, const std::string& where);
  std::string type_name() const override { return "StableLmForCausalLM"; }
  int64_t num_cache_layers() const override { return cfg_.num_layers; }
  std::string base_model_prefix() const override { return "model"; }

  std::shared_ptr<StableLmModel> model;

 protected:
  at::Tensor body_forward(const ModelInputs& in) override { return model->forward(in); }
  Embedding& input_embedding() override { return *model->embed_tokens; }

 private:
  StableLmForCausalLM(const nlohmann::json& j, StableLmConfig cfg);
  StableLmConfig cfg_;
};

// StableLmForSequenceClassification: the body and `score` on each row's last non-pad token.
std::shared_ptr<Model> make_stablelm_classifier(const nlohmann::json& j, const std::string& where);

}  // namespace peft
