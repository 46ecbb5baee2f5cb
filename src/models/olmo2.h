// OLMo 2 (Olmo2ForCausalLM): LLaMA's projections and SwiGLU MLP, with the norms after each
// sublayer (post_attention_layernorm on the attention output, post_feedforward_layernorm on
// the MLP output, both before the residual add) and RMSNorms over the whole query and key
// projections (q_norm, k_norm: all heads at once) before the rotation.
#pragma once

#include "models/attention.h"
#include "models/llama.h"
#include "models/lm_head.h"
#include "models/model_config.h"
#include "peft/layers.h"
#include "peft/model.h"

namespace peft {

class Olmo2Attention : public Module {
 public:
  explicit Olmo2Attention(const LlamaConfig& c);
  std::string type_name() const override { return "Olmo2Attention"; }
  at::Tensor forward(const at::Tensor& h, const RotaryEmbedding::Angles& rope, const at::Tensor& mask,
                     KVCache* cache, size_t layer);
  std::shared_ptr<Linear> q_proj, k_proj, v_proj, o_proj;
  std::shared_ptr<RMSNorm> q_norm, k_norm;

 private:
  int64_t heads_, kv_heads_, head_dim_;
};

class Olmo2DecoderLayer : public Module {
 public:
  explicit Olmo2DecoderLayer(const LlamaConfig& c);
  std::string type_name() const override { return "Olmo2DecoderLayer"; }
  at::Tensor forward(const at::Tensor& h, const RotaryEmbedding::Angles& rope, const at::Tensor& mask,
                     KVCache* cache, size_t layer);
  std::shared_ptr<Olmo2Attention> self_attn;
  std::shared_ptr<LlamaMLP> mlp;
  std::shared_ptr<RMSNorm> post_attention_layernorm, post_feedforward_layernorm;
};

class Olmo2Model : public Module {
 public:
  explicit Olmo2Model(const LlamaConfig& c);
  std::string type_name() const override { return "Olmo2Model"; }
  at::Tensor forward(const ModelInputs& in);
  Embedding& token_embedding() { return *embed_tokens; }
  std::shared_ptr<Embedding> embed_tokens;
  std::shared_ptr<ModuleList<Olmo2DecoderLayer>> layers;
  std::shared_ptr<RMSNorm> norm;

 private:
  RotaryEmbedding rope_;
};

class Olmo2ForCausalLM : public CausalLMBase {
 public:
  Olmo2ForCausalLM(const nlohmann::json& j, const std::string& where);
  std::string type_name() const override { return "Olmo2ForCausalLM"; }
  int64_t num_cache_layers() const override { return cfg_.num_layers; }
  std::string base_model_prefix() const override { return "model"; }

  std::shared_ptr<Olmo2Model> model;

 protected:
  at::Tensor body_forward(const ModelInputs& in) override { return model->forward(in); }
  Embedding& input_embedding() override { return *model->embed_tokens; }

 private:
  Olmo2ForCausalLM(const nlohmann::json& j, LlamaConfig cfg);
  LlamaConfig cfg_;
};

// Olmo2ForSequenceClassification: the body and `score` on each row's last non-pad token.
std::shared_ptr<Model> make_olmo2_classifier(const nlohmann::json& j, const std::string& where);

}  // namespace peft
