// StarCoder2 (Starcoder2ForCausalLM): LLaMA's attention layout (GQA, rotary) with biases
// (use_bias), LayerNorms, a c_fc / c_proj MLP, and an optional sliding window on every
// layer.
#pragma once

#include "models/attention.h"
#include "models/lm_head.h"
#include "peft/layers.h"
#include "peft/model.h"

namespace peft {

struct Starcoder2Config {
  int64_t vocab_size, hidden_size, intermediate_size, num_layers, num_heads, num_kv_heads, head_dim,
      max_position_embeddings, sliding_window;  // 0: none
  double norm_epsilon;
  std::string hidden_act;
  bool use_bias, tie_word_embeddings;
  nlohmann::json rope;
  static Starcoder2Config from_json(const nlohmann::json& j, const std::string& where);
};

class Starcoder2Attention : public Module {
 public:
  explicit Starcoder2Attention(const Starcoder2Config& c);
  std::string type_name() const override { return "Starcoder2Attention"; }
  at::Tensor forward(const at::Tensor& h, const RotaryEmbedding::Angles& rope, const at::Tensor& mask,
                     KVCache* cache, size_t layer);
  std::shared_ptr<Linear> q_proj, k_proj, v_proj, o_proj;

 private:
  int64_t heads_, kv_heads_, head_dim_;
};

class Starcoder2MLP : public AdaptableLayer {  // adaptable: parallel adapters sit beside it
 public:
  explicit Starcoder2MLP(const Starcoder2Config& c);
  std::string type_name() const override { return "Starcoder2MLP"; }
  LayerKind kind() const override { return LayerKind::kBlock; }
  at::Tensor base_forward(const at::Tensor& x) override;
  int64_t input_dim() const override { return c_fc->in_features; }
  int64_t output_dim() const override { return c_proj->out_features; }
  std::shared_ptr<Linear> c_fc, c_proj;

 private:
  std::string act_;
};

class Starcoder2DecoderLayer : public Module {
 public:
  explicit Starcoder2DecoderLayer(const Starcoder2Config& c);
  std::string type_name() const override { return "Starcoder2DecoderLayer"; }
  at::Tensor forward(const at::Tensor& h, const RotaryEmbedding::Angles& rope, const at::Tensor& mask,
                     KVCache* cache, size_t layer);
  std::shared_ptr<Starcoder2Attention> self_attn;
  std::shared_ptr<Starcoder2MLP> mlp;
  std::shared_ptr<LayerNorm> input_layernorm, post_attention_layernorm;
};

class Starcoder2Model : public Module {
 public:
  explicit Starcoder2Model(const Starcoder2Config& c);
  std::string type_name() const override { return "Starcoder2Model"; }
  at::Tensor forward(const ModelInputs& in);
  Embedding& token_embedding() { return *embed_tokens; }
  std::shared_ptr<Embedding> embed_tokens;
  std::shared_ptr<ModuleList<Starcoder2DecoderLayer>> layers;
  std::shared_ptr<LayerNorm> norm;

 private:
  RotaryEmbedding rope_;
  int64_t sliding_window_;
};

class Starcoder2ForCausalLM : public CausalLMBase {
 public:
  Starcoder2ForCausalLM(const nlohmann::json& j, const std::string& where);
  std::string type_name() const override { return "Starcoder2ForCausalLM"; }
  int64_t num_cache_layers() const override { return cfg_.num_layers; }
  std::string base_model_prefix() const override { return "model"; }

  std::shared_ptr<Starcoder2Model> model;

 protected:
  at::Tensor body_forward(const ModelInputs& in) override { return model->forward(in); }
  Embedding& input_embedding() override { return *model->embed_tokens; }

 private:
  Starcoder2ForCausalLM(const nlohmann::json& j, Starcoder2Config cfg);
  Starcoder2Config cfg_;
};

// Starcoder2ForSequenceClassification: the body and `score` on each row's last non-pad token.
std::shared_ptr<Model> make_starcoder2_classifier(const nlohmann::json& j, const std::string& where);

}  // namespace peft
