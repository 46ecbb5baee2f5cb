// GPT-Neo (GPTNeoForCausalLM; TinyStories, gpt-neo-125m .. 2.7B): GPT-2's pre-LayerNorm
// blocks with learned positions and separate q/k/v projections (no bias), unscaled attention
// scores computed in float32, and "local" layers that see only the last window_size
// positions, alternating with "global" ones as attention_types lists them.
#pragma once

#include "models/lm_head.h"
#include "peft/layers.h"
#include "peft/model.h"

namespace peft {

struct GPTNeoConfig {
  int64_t vocab_size, max_position_embeddings, hidden_size, num_layers, num_heads, intermediate_size, window_size;
  double layer_norm_epsilon;
  std::string activation_function;
  bool tie_word_embeddings;
  std::vector<bool> local;  // per layer: attention_types expanded, true for "local"
  static GPTNeoConfig from_json(const nlohmann::json& j, const std::string& where);
};

class GPTNeoSelfAttention : public Module {
 public:
  explicit GPTNeoSelfAttention(const GPTNeoConfig& c);
  std::string type_name() const override { return "GPTNeoSelfAttention"; }
  // `mask`: the layer's mask (windowed for local layers), undefined for plain causal.
  at::Tensor forward(const at::Tensor& h, const at::Tensor& mask, KVCache* cache, size_t layer);
  std::shared_ptr<Linear> k_proj, v_proj, q_proj, out_proj;

 private:
  int64_t heads_, head_dim_;
};

// transformers' GPTNeoAttention wrapper: the self-attention sits under "attention".
class GPTNeoAttention : public Module {
 public:
  explicit GPTNeoAttention(const GPTNeoConfig& c);
  std::string type_name() const override { return "GPTNeoAttention"; }
  std::shared_ptr<GPTNeoSelfAttention> attention;
};

class GPTNeoMLP : public AdaptableLayer {  // adaptable: parallel adapters sit beside it
 public:
  explicit GPTNeoMLP(const GPTNeoConfig& c);
  std::string type_name() const override { return "GPTNeoMLP"; }
  LayerKind kind() const override { return LayerKind::kBlock; }
  at::Tensor base_forward(const at::Tensor& x) override;
  int64_t input_dim() const override { return c_fc->in_features; }
  int64_t output_dim() const override { return c_proj->out_features; }
  std::shared_ptr<Linear> c_fc, c_proj;

 private:
  std::string act_;
};

class GPTNeoBlock : public Module {
 public:
  explicit GPTNeoBlock(const GPTNeoConfig& c);
  std::string type_name() const override { return "GPTNeoBlock"; }
  at::Tensor forward(const at::Tensor& h, const at::Tensor& mask, KVCache* cache, size_t layer);
  std::shared_ptr<LayerNorm> ln_1, ln_2;
  std::shared_ptr<GPTNeoAttention> attn;
  std::shared_ptr<GPTNeoMLP> mlp;
};

class GPTNeoModel : public Module {
 public:
  explicit GPTNeoModel(const GPTNeoConfig& c);
  std::string type_name() const override { return "GPTNeoModel"; }
  at::Tensor forward(const ModelInputs& in);
  Embedding& token_embedding() { return *wte; }
  std::shared_ptr<Embedding> wte, wpe;
  std::shared_ptr<ModuleList<GPTNeoBlock>> h;
  std::shared_ptr<LayerNorm> ln_f;

 private:
  std::vector<bool> local_;
  int64_t window_;
};

class GPTNeoForCausalLM : public CausalLMBase {
 public:
  GPTNeoForCausalLM(const nlohmann::json& j, const std::string& where);
  std::string type_name() const override { return "GPTNeoForCausalLM"; }
  int64_t num_cache_layers() const override { return cfg_.num_layers; }
  int64_t max_positions() const override { return cfg_.max_position_embeddings; }
  std::string base_model_prefix() const override { return "transformer"; }

  std::shared_ptr<GPTNeoModel> transformer;

 protected:
  at::Tensor body_forward(const ModelInputs& in) override { return transformer->forward(in); }
  Embedding& input_embedding() override { return *transformer->wte; }

 private:
  GPTNeoForCausalLM(const nlohmann::json& j, GPTNeoConfig cfg);
  GPTNeoConfig cfg_;
};

// GPTNeoForSequenceClassification: the body and `score` on each row's last non-pad token.
std::shared_ptr<Model> make_gpt_neo_classifier(const nlohmann::json& j, const std::string& where);

}  // namespace peft
