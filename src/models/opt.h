// OPT (OPTForCausalLM): learned positions offset by 2 and counted from the attention
// mask, biased q/k/v/out projections with the queries scaled before the product, a ReLU
// MLP (fc1, fc2), pre- or post-LayerNorm blocks (do_layer_norm_before), and, where the
// embedding is narrower than the model (word_embed_proj_dim, OPT-350m), project_in /
// project_out around the layers. transformers' module names throughout.
#pragma once

#include "models/lm_head.h"
#include "peft/layers.h"
#include "peft/model.h"

namespace peft {

struct OPTConfig {
  int64_t vocab_size, hidden_size, num_layers, num_heads, ffn_dim, max_position_embeddings, word_embed_proj_dim;
  bool do_layer_norm_before, final_layer_norm, enable_bias, tie_word_embeddings;
  std::string activation_function;
  static OPTConfig from_json(const nlohmann::json& j, const std::string& where);
};

class OPTAttention : public Module {
 public:
  explicit OPTAttention(const OPTConfig& c);
  std::string type_name() const override { return "OPTAttention"; }
  at::Tensor forward(const at::Tensor& h, const at::Tensor& mask, KVCache* cache, size_t layer);
  std::shared_ptr<Linear> k_proj, v_proj, q_proj, out_proj;  // transformers' order

 private:
  int64_t heads_, head_dim_;
};

class OPTDecoderLayer : public Module {
 public:
  explicit OPTDecoderLayer(const OPTConfig& c);
  std::string type_name() const override { return "OPTDecoderLayer"; }
  at::Tensor forward(const at::Tensor& h, const at::Tensor& mask, KVCache* cache, size_t layer);
  std::shared_ptr<OPTAttention> self_attn;
  std::shared_ptr<LayerNorm> self_attn_layer_norm, final_layer_norm;
  std::shared_ptr<Linear> fc1, fc2;

 private:
  bool pre_norm_;
  std::string act_;
};

class OPTDecoder : public Module {
 public:
  explicit OPTDecoder(const OPTConfig& c);
  std::string type_name() const override { return "OPTDecoder"; }
  at::Tensor forward(const ModelInputs& in);
  std::shared_ptr<Embedding> embed_tokens, embed_positions;
  std::shared_ptr<Linear> project_out, project_in;  // null unless word_embed_proj_dim differs
  std::shared_ptr<LayerNorm> final_layer_norm;      // null for post-LayerNorm models
  std::shared_ptr<ModuleList<OPTDecoderLayer>> layers;
};

class OPTModel : public Module {
 public:
  explicit OPTModel(const OPTConfig& c) { decoder = register_module("decoder", std::make_shared<OPTDecoder>(c)); }
  std::string type_name() const override { return "OPTModel"; }
  at::Tensor forward(const ModelInputs& in) { return decoder->forward(in); }
  Embedding& token_embedding() { return *decoder->embed_tokens; }
  std::shared_ptr<OPTDecoder> decoder;
};

class OPTForCausalLM : public CausalLMBase {
 public:
  OPTForCausalLM(const nlohmann::json& j, const std::string& where);
  std::string type_name() const override { return "OPTForCausalLM"; }
  int64_t num_cache_layers() const override { return cfg_.num_layers; }
  int64_t max_positions() const override { return cfg_.max_position_embeddings; }
  std::string base_model_prefix() const override { return "model"; }

  std::shared_ptr<OPTModel> model;

 protected:
  at::Tensor body_forward(const ModelInputs& in) override { return model->decoder->forward(in); }
  Embedding& input_embedding() override { return *model->decoder->embed_tokens; }

 private:
  OPTForCausalLM(const nlohmann::json& j, OPTConfig cfg);
  OPTConfig cfg_;
};

// OPTForSequenceClassification: the body and `score` on each row's last non-pad token.
std::shared_ptr<Model> make_opt_classifier(const nlohmann::json& j, const std::string& where);

}  // namespace peft
