// BLOOM (BloomForCausalLM: bloom-560m .. 176b, bloomz, mT0's decoder siblings): ALiBi
// instead of positions (each head adds slope x key position to its scores, key positions
// counted over the attention mask), a LayerNorm on the embeddings, a fused
// query_key_value laid out per head, BLOOM's tanh GELU. transformers' module names.
#pragma once

#include "models/lm_head.h"
#include "peft/layers.h"
#include "peft/model.h"

namespace peft {

struct BloomConfig {
  int64_t vocab_size, hidden_size, num_layers, num_heads;
  double layer_norm_epsilon;
  bool residual_post_layernorm, tie_word_embeddings;
  static BloomConfig from_json(const nlohmann::json& j, const std::string& where);
};

class BloomAttention : public Module {
 public:
  explicit BloomAttention(const BloomConfig& c);
  std::string type_name() const override { return "BloomAttention"; }
  // alibi: [b, heads, 1, kv_len]; mask: [b, 1, q_len, kv_len], true = may attend.
  at::Tensor forward(const at::Tensor& h, const at::Tensor& alibi, const at::Tensor& mask, KVCache* cache,
                     size_t layer);
  std::shared_ptr<Linear> query_key_value, dense;

 private:
  int64_t heads_, head_dim_;
};

class BloomMLP : public AdaptableLayer {  // adaptable: parallel adapters sit beside it
 public:
  explicit BloomMLP(const BloomConfig& c);
  std::string type_name() const override { return "BloomMLP"; }
  LayerKind kind() const override { return LayerKind::kBlock; }
  at::Tensor base_forward(const at::Tensor& x) override;
  int64_t input_dim() const override { return dense_h_to_4h->in_features; }
  int64_t output_dim() const override { return dense_4h_to_h->out_features; }
  std::shared_ptr<Linear> dense_h_to_4h, dense_4h_to_h;
};

class BloomBlock : public Module {
 public:
  explicit BloomBlock(const BloomConfig& c);
  std::string type_name() const override { return "BloomBlock"; }
  at::Tensor forward(const at::Tensor& h, const at::Tensor& alibi, const at::Tensor& mask, KVCache* cache,
                     size_t layer);
  std::shared_ptr<LayerNorm> input_layernorm, post_attention_layernorm;
  std::shared_ptr<BloomAttention> self_attention;
  std::shared_ptr<BloomMLP> mlp;

 private:
  bool residual_post_ln_;  // apply_residual_connection_post_layernorm
};

class BloomModel : public Module {
 public:
  explicit BloomModel(const BloomConfig& c);
  std::string type_name() const override { return "BloomModel"; }
  at::Tensor forward(const ModelInputs& in);
  Embedding& token_embedding() { return *word_embeddings; }
  std::shared_ptr<Embedding> word_embeddings;
  std::shared_ptr<LayerNorm> word_embeddings_layernorm, ln_f;
  std::shared_ptr<ModuleList<BloomBlock>> h;

 private:
  at::Tensor slopes_;  // [heads] float32, transformers' _get_alibi_slopes
};

class BloomForCausalLM : public CausalLMBase {
 public:
  BloomForCausalLM(const nlohmann::json& j, const std::string& where);
  std::string type_name() const override { return "BloomForCausalLM"; }
  int64_t num_cache_layers() const override { return cfg_.num_layers; }
  std::string base_model_prefix() const override { return "transformer"; }

  std::shared_ptr<BloomModel> transformer;

 protected:
  at::Tensor body_forward(const ModelInputs& in) override { return transformer->forward(in); }
  Embedding& input_embedding() override { return *transformer->word_embeddings; }

 private:
  BloomForCausalLM(const nlohmann::json& j, BloomConfig cfg);
  BloomConfig cfg_;
};

// BloomForSequenceClassification: the body and `score` on each row's last non-pad token.
std::shared_ptr<Model> make_bloom_classifier(const nlohmann::json& j, const std::string& where);

}  // namespace peft
