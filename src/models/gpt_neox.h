// GPT-NeoX (GPTNeoXForCausalLM: Pythia, GPT-NeoX-20B): a fused query_key_value laid out
// per head (each head's query, key, value side by side), partial rotary embeddings
// (rotary_pct / partial_rotary_factor of each head), LayerNorms, and by default the
// parallel residual (attention and MLP both read the block's input). transformers' v5
// module names; the head's file key stays `embed_out`.
#pragma once

#include "models/attention.h"
#include "models/lm_head.h"
#include "peft/layers.h"
#include "peft/model.h"

namespace peft {

struct GPTNeoXConfig {
  int64_t vocab_size, hidden_size, num_layers, num_heads, intermediate_size, max_position_embeddings;
  double layer_norm_eps;
  std::string hidden_act;
  bool use_parallel_residual, attention_bias, tie_word_embeddings;
  nlohmann::json rope;  // rope_parameters with rope_theta and partial_rotary_factor set
  static GPTNeoXConfig from_json(const nlohmann::json& j, const std::string& where);
};

class GPTNeoXAttention : public Module {
 public:
  explicit GPTNeoXAttention(const GPTNeoXConfig& c);
  std::string type_name() const override { return "GPTNeoXAttention"; }
  at::Tensor forward(const at::Tensor& h, const RotaryEmbedding::Angles& rope, const at::Tensor& mask,
                     KVCache* cache, size_t layer);
  std::shared_ptr<Linear> query_key_value, dense;

 private:
  int64_t heads_, head_dim_;
};

class GPTNeoXMLP : public AdaptableLayer {  // adaptable: parallel adapters sit beside it
 public:
  explicit GPTNeoXMLP(const GPTNeoXConfig& c);
  std::string type_name() const override { return "GPTNeoXMLP"; }
  LayerKind kind() const override { return LayerKind::kBlock; }
  at::Tensor base_forward(const at::Tensor& x) override;
  int64_t input_dim() const override { return dense_h_to_4h->in_features; }
  int64_t output_dim() const override { return dense_4h_to_h->out_features; }
  std::shared_ptr<Linear> dense_h_to_4h, dense_4h_to_h;

 private:
  std::string act_;
};

class GPTNeoXLayer : public Module {
 public:
  explicit GPTNeoXLayer(const GPTNeoXConfig& c);
  std::string type_name() const override { return "GPTNeoXLayer"; }
  at::Tensor forward(const at::Tensor& h, const RotaryEmbedding::Angles& rope, const at::Tensor& mask,
                     KVCache* cache, size_t layer);
  std::shared_ptr<LayerNorm> input_layernorm, post_attention_layernorm;
  std::shared_ptr<GPTNeoXAttention> attention;
  std::shared_ptr<GPTNeoXMLP> mlp;

 private:
  bool parallel_;
};

class GPTNeoXModel : public Module {
 public:
  explicit GPTNeoXModel(const GPTNeoXConfig& c);
  std::string type_name() const override { return "GPTNeoXModel"; }
  at::Tensor forward(const ModelInputs& in);
  Embedding& token_embedding() { return *embed_in; }
  std::shared_ptr<Embedding> embed_in;
  std::shared_ptr<ModuleList<GPTNeoXLayer>> layers;
  std::shared_ptr<LayerNorm> final_layer_norm;

 private:
  RotaryEmbedding rope_;
};

class GPTNeoXForCausalLM : public CausalLMBase {
 public:
  GPTNeoXForCausalLM(const nlohmann::json& j, const std::string& where);
  std::string type_name() const override { return "GPTNeoXForCausalLM"; }
  int64_t num_cache_layers() const override { return cfg_.num_layers; }
  std::string base_model_prefix() const override { return "gpt_neox"; }
  // The module is lm_head, but files (Pythia's, and what transformers 5 still writes)
  // call it embed_out, transformers 4's name.
  std::string name_for_checkpoint_key(const std::string& key) const override {
    return key.rfind("embed_out.", 0) == 0 ? "lm_head." + key.substr(10) : key;
  }
  std::string checkpoint_key_for_name(const std::string& name) const override {
    return name.rfind("lm_head.", 0) == 0 ? "embed_out." + name.substr(8) : name;
  }

  std::shared_ptr<GPTNeoXModel> gpt_neox;

 protected:
  at::Tensor body_forward(const ModelInputs& in) override { return gpt_neox->forward(in); }
  Embedding& input_embedding() override { return *gpt_neox->embed_in; }

 private:
  GPTNeoXForCausalLM(const nlohmann::json& j, GPTNeoXConfig cfg);
  GPTNeoXConfig cfg_;
};

// GPTNeoXForSequenceClassification: the body and `score` on each row's last non-pad token.
std::shared_ptr<Model> make_gpt_neox_classifier(const nlohmann::json& j, const std::string& where);

}  // namespace peft
