// GPT-J (GPTJForCausalLM): parallel attention and MLP from one LayerNorm (ln_1), q/k/v/out
// projections without bias, rotary positions on the first rotary_dim features of each head
// in GPT-J's interleaved form (pairs of neighbouring features rotate together), a fc_in /
// fc_out MLP and an lm_head with a bias.
#pragma once

#include "models/lm_head.h"
#include "peft/layers.h"
#include "peft/model.h"

namespace peft {

struct GPTJConfig {
  int64_t vocab_size, n_positions, n_embd, n_layer, n_head, n_inner, rotary_dim;
  double layer_norm_epsilon;
  std::string activation_function;
  bool tie_word_embeddings;
  static GPTJConfig from_json(const nlohmann::json& j, const std::string& where);
};

// cos and sin [b, 1, s, rotary_dim] of GPT-J's interleaved rotary embedding.
struct GPTJAngles {
  at::Tensor cos, sin;
};

class GPTJAttention : public Module {
 public:
  explicit GPTJAttention(const GPTJConfig& c);
  std::string type_name() const override { return "GPTJAttention"; }
  at::Tensor forward(const at::Tensor& h, const GPTJAngles& rope, const at::Tensor& mask, KVCache* cache,
                     size_t layer);
  std::shared_ptr<Linear> k_proj, v_proj, q_proj, out_proj;

 private:
  int64_t heads_, head_dim_;
};

class GPTJMLP : public AdaptableLayer {  // adaptable: parallel adapters sit beside it
 public:
  explicit GPTJMLP(const GPTJConfig& c);
  std::string type_name() const override { return "GPTJMLP"; }
  LayerKind kind() const override { return LayerKind::kBlock; }
  at::Tensor base_forward(const at::Tensor& x) override;
  int64_t input_dim() const override { return fc_in->in_features; }
  int64_t output_dim() const override { return fc_out->out_features; }
  std::shared_ptr<Linear> fc_in, fc_out;

 private:
  std::string act_;
};

class GPTJBlock : public Module {
 public:
  explicit GPTJBlock(const GPTJConfig& c);
  std::string type_name() const override { return "GPTJBlock"; }
  at::Tensor forward(const at::Tensor& h, const GPTJAngles& rope, const at::Tensor& mask, KVCache* cache,
                     size_t layer);
  std::shared_ptr<LayerNorm> ln_1;
  std::shared_ptr<GPTJAttention> attn;
  std::shared_ptr<GPTJMLP> mlp;
};

class GPTJModel : public Module {
 public:
  explicit GPTJModel(const GPTJConfig& c);
  std::string type_name() const override { return "GPTJModel"; }
  at::Tensor forward(const ModelInputs& in);
  Embedding& token_embedding() { return *wte; }
  std::shared_ptr<Embedding> wte;
  std::shared_ptr<ModuleList<GPTJBlock>> h;
  std::shared_ptr<LayerNorm> ln_f;

 private:
  at::Tensor inv_freq_;  // [rotary_dim / 2] float32
};

class GPTJForCausalLM : public CausalLMBase {
 public:
  GPTJForCausalLM(const nlohmann::json& j, const std::string& where);
  std::string type_name() const override { return "GPTJForCausalLM"; }
  int64_t num_cache_layers() const override { return cfg_.n_layer; }
  int64_t max_positions() const override { return cfg_.n_positions; }  // its sinusoid table's size
  std::string base_model_prefix() const override { return "transformer"; }

  std::shared_ptr<GPTJModel> transformer;

 protected:
  at::Tensor body_forward(const ModelInputs& in) override { return transformer->forward(in); }
  Embedding& input_embedding() override { return *transformer->wte; }

 private:
  GPTJForCausalLM(const nlohmann::json& j, GPTJConfig cfg);
  GPTJConfig cfg_;
};

// GPTJForSequenceClassification: the body and `score` on each row's last non-pad token.
std::shared_ptr<Model> make_gptj_classifier(const nlohmann::json& j, const std::string& where);

}  // namespace peft
