// Phi (PhiForCausalLM: phi-1, phi-1.5, phi-2): one LayerNorm feeds attention and MLP in
// parallel (both added to the residual), biased q/k/v_proj and `dense`, rotary on the first
// partial_rotary_factor of each head (default 0.5; phi-2 0.4), optional LayerNorms on the
// queries and keys (qk_layernorm), a gelu_new MLP (fc1, fc2) and an lm_head with a bias.
#pragma once

#include "models/attention.h"
#include "models/lm_head.h"
#include "peft/layers.h"
#include "peft/model.h"

namespace peft {

struct PhiConfig {
  int64_t vocab_size, hidden_size, num_layers, num_heads, num_kv_heads, head_dim, intermediate_size,
      max_position_embeddings;
  double layer_norm_eps;
  std::string hidden_act;
  bool qk_layernorm, tie_word_embeddings;
  nlohmann::json rope;  // rope_parameters with rope_theta and partial_rotary_factor set
  static PhiConfig from_json(const nlohmann::json& j, const std::string& where);
};

class PhiAttention : public Module {
 public:
  explicit PhiAttention(const PhiConfig& c);
  std::string type_name() const override { return "PhiAttention"; }
  at::Tensor forward(const at::Tensor& h, const RotaryEmbedding::Angles& rope, const at::Tensor& mask,
                     KVCache* cache, size_t layer);
  std::shared_ptr<Linear> q_proj, k_proj, v_proj, dense;
  std::shared_ptr<LayerNorm> q_layernorm, k_layernorm;  // with qk_layernorm only

 private:
  int64_t heads_, kv_heads_, head_dim_;
};

class PhiMLP : public AdaptableLayer {  // adaptable: parallel adapters sit beside it
 public:
  explicit PhiMLP(const PhiConfig& c);
  std::string type_name() const override { return "PhiMLP"; }
  LayerKind kind() const override { return LayerKind::kBlock; }
  at::Tensor base_forward(const at::Tensor& x) override;
  int64_t input_dim() const override { return fc1->in_features; }
  int64_t output_dim() const override { return fc2->out_features; }
  std::shared_ptr<Linear> fc1, fc2;

 private:
  std::string act_;
};

class PhiDecoderLayer : public Module {
 public:
  explicit PhiDecoderLayer(const PhiConfig& c);
  std::string type_name() const override { return "PhiDecoderLayer"; }
  at::Tensor forward(const at::Tensor& h, const RotaryEmbedding::Angles& rope, const at::Tensor& mask,
                     KVCache* cache, size_t layer);
  std::shared_ptr<PhiAttention> self_attn;
  std::shared_ptr<PhiMLP> mlp;
  std::shared_ptr<LayerNorm> input_layernorm;
};

class PhiModel : public Module {
 public:
  explicit PhiModel(const PhiConfig& c);
  std::string type_name() const override { return "PhiModel"; }
  at::Tensor forward(const ModelInputs& in);
  Embedding& token_embedding() { return *embed_tokens; }
  std::shared_ptr<Embedding> embed_tokens;
  std::shared_ptr<ModuleList<PhiDecoderLayer>> layers;
  std::shared_ptr<LayerNorm> final_layernorm;

 private:
  RotaryEmbedding rope_;
};

class PhiForCausalLM : public CausalLMBase {
 public:
  PhiForCausalLM(const nlohmann::json& j, const std::string& where);
  std::string type_name() const override { return "PhiForCausalLM"; }
  int64_t num_cache_layers() const override { return cfg_.num_layers; }
  std::string base_model_prefix() const override { return "model"; }

  std::shared_ptr<PhiModel> model;

 protected:
  at::Tensor body_forward(const ModelInputs& in) override { return model->forward(in); }
  Embedding& input_embedding() override { return *model->embed_tokens; }

 private:
  PhiForCausalLM(const nlohmann::json& j, PhiConfig cfg);
  PhiConfig cfg_;
};

// PhiForSequenceClassification: the body and `score` on each row's last non-pad token.
std::shared_ptr<Model> make_phi_classifier(const nlohmann::json& j, const std::string& where);

}  // namespace peft
