// Falcon (FalconForCausalLM: falcon-7b/40b/180b and their rotary kin): a fused
// query_key_value in one of three layouts (per head; multi-query: all queries, then one key
// and one value; the new decoder architecture: per key/value group, its queries then its
// key and value), rotary positions, parallel or sequential attention and MLP with one or
// two LayerNorms. ALiBi Falcons (falcon-rw) are refused by name.
#pragma once

#include "models/attention.h"
#include "models/lm_head.h"
#include "peft/layers.h"
#include "peft/model.h"

namespace peft {

struct FalconConfig {
  int64_t vocab_size, hidden_size, num_layers, num_heads, num_kv_heads, ffn_hidden_size, max_position_embeddings;
  double layer_norm_epsilon;
  std::string activation;
  bool new_decoder_architecture, multi_query, parallel_attn, bias, tie_word_embeddings;
  int64_t num_ln_in_parallel_attn;  // 1 or 2 (ln_attn and ln_mlp)
  nlohmann::json rope;
  static FalconConfig from_json(const nlohmann::json& j, const std::string& where);
};

class FalconAttention : public Module {
 public:
  explicit FalconAttention(const FalconConfig& c);
  std::string type_name() const override { return "FalconAttention"; }
  at::Tensor forward(const at::Tensor& h, const RotaryEmbedding::Angles& rope, const at::Tensor& mask,
                     KVCache* cache, size_t layer);
  std::shared_ptr<Linear> query_key_value, dense;

 private:
  enum class Layout { kPerHead, kMultiQuery, kGrouped } layout_;
  int64_t heads_, kv_heads_, head_dim_;
};

class FalconMLP : public AdaptableLayer {  // adaptable: parallel adapters sit beside it
 public:
  explicit FalconMLP(const FalconConfig& c);
  std::string type_name() const override { return "FalconMLP"; }
  LayerKind kind() const override { return LayerKind::kBlock; }
  at::Tensor base_forward(const at::Tensor& x) override;
  int64_t input_dim() const override { return dense_h_to_4h->in_features; }
  int64_t output_dim() const override { return dense_4h_to_h->out_features; }
  std::shared_ptr<Linear> dense_h_to_4h, dense_4h_to_h;

 private:
  std::string act_;
};

class FalconDecoderLayer : public Module {
 public:
  explicit FalconDecoderLayer(const FalconConfig& c);
  std::string type_name() const override { return "FalconDecoderLayer"; }
  at::Tensor forward(const at::Tensor& h, const RotaryEmbedding::Angles& rope, const at::Tensor& mask,
                     KVCache* cache, size_t layer);
  std::shared_ptr<FalconAttention> self_attention;
  std::shared_ptr<FalconMLP> mlp;
  // Sequential: input_layernorm and post_attention_layernorm; parallel: input_layernorm,
  // or ln_attn and ln_mlp (num_ln_in_parallel_attn 2).
  std::shared_ptr<LayerNorm> post_attention_layernorm, input_layernorm, ln_attn, ln_mlp;
};

class FalconModel : public Module {
 public:
  explicit FalconModel(const FalconConfig& c);
  std::string type_name() const override { return "FalconModel"; }
  at::Tensor forward(const ModelInputs& in);
  Embedding& token_embedding() { return *word_embeddings; }
  std::shared_ptr<Embedding> word_embeddings;
  std::shared_ptr<ModuleList<FalconDecoderLayer>> h;
  std::shared_ptr<LayerNorm> ln_f;

 private:
  RotaryEmbedding rope_;
};

class FalconForCausalLM : public CausalLMBase {
 public:
  FalconForCausalLM(const nlohmann::json& j, const std::string& where);
  std::string type_name() const override { return "FalconForCausalLM"; }
  int64_t num_cache_layers() const override { return cfg_.num_layers; }
  std::string base_model_prefix() const override { return "transformer"; }

  std::shared_ptr<FalconModel> transformer;

 protected:
  at::Tensor body_forward(const ModelInputs& in) override { return transformer->forward(in); }
  Embedding& input_embedding() override { return *transformer->word_embeddings; }

 private:
  FalconForCausalLM(const nlohmann::json& j, FalconConfig cfg);
  FalconConfig cfg_;
};

// FalconForSequenceClassification: the body and `score` on each row's last non-pad token.
std::shared_ptr<Model> make_falcon_classifier(const nlohmann::json& j, const std::string& where);

}  // namespace peft
