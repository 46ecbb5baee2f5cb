// Gemma (GemmaForCausalLM), Gemma 2 (Gemma2ForCausalLM) and Gemma 3 text (Gemma3ForCausalLM,
// model_type gemma3_text): (1 + w) RMSNorm, norms before and after both attention and MLP
// (Gemma 1: before only, as LLaMA), the embedding scaled by
// sqrt(hidden) inside the embedding module (as transformers 5), GeGLU, sliding-window and
// global layers (layer_types) with their own RoPE (Gemma 3), Gemma 3's q_norm / k_norm,
// attention and final logit soft-capping (Gemma 2).
#pragma once

#include "models/attention.h"
#include "models/llama.h"
#include "models/lm_head.h"
#include "models/model_config.h"
#include "peft/layers.h"
#include "peft/model.h"

namespace peft {

// Gemma's RMSNorm: normalizes and scales by (1 + weight) in fp32, then casts.
class GemmaRMSNorm : public RMSNorm {
 public:
  GemmaRMSNorm(int64_t dim, double eps, std::string type) : RMSNorm(dim, eps, std::move(type)) {}
  at::Tensor base_forward(const at::Tensor& x) override;
};

// The token embedding times sqrt(hidden), the scale rounded to float32 and then to the
// weight's dtype as transformers' embed_scale buffer is.
class GemmaScaledEmbedding : public Embedding {
 public:
  GemmaScaledEmbedding(int64_t n, int64_t d, std::string type);
  std::string type_name() const override { return type_; }
  at::Tensor forward_with_weight(const at::Tensor& ids, const at::Tensor& table) override;

 private:
  std::string type_;
  float scale_;
};

class GemmaAttention : public Module {
 public:
  explicit GemmaAttention(const GemmaConfig& c);
  std::string type_name() const override { return arch_ + "Attention"; }
  at::Tensor forward(const at::Tensor& h, const RotaryEmbedding::Angles& rope, const at::Tensor& mask,
                     KVCache* cache, size_t layer);
  std::shared_ptr<Linear> q_proj, k_proj, v_proj, o_proj;
  std::shared_ptr<GemmaRMSNorm> q_norm, k_norm;  // Gemma 3 only

 private:
  std::string arch_;
  int64_t heads_, kv_heads_, head_dim_;
  double scale_;
  std::optional<double> softcap_;
};

class GemmaDecoderLayer : public Module {
 public:
  GemmaDecoderLayer(const GemmaConfig& c, bool sliding);
  std::string type_name() const override { return arch_ + "DecoderLayer"; }
  bool sliding() const { return sliding_; }
  at::Tensor forward(const at::Tensor& h, const RotaryEmbedding::Angles& rope, const at::Tensor& mask,
                     KVCache* cache, size_t layer);
  std::shared_ptr<GemmaAttention> self_attn;
  std::shared_ptr<LlamaMLP> mlp;
  std::shared_ptr<GemmaRMSNorm> input_layernorm, post_attention_layernorm;
  std::shared_ptr<GemmaRMSNorm> pre_feedforward_layernorm, post_feedforward_layernorm;  // Gemma 2 / 3

 private:
  std::string arch_;
  bool sliding_;
};

class GemmaModel : public Module {
 public:
  explicit GemmaModel(const GemmaConfig& c);
  std::string type_name() const override { return arch_ == "Gemma3" ? "Gemma3TextModel" : arch_ + "Model"; }
  at::Tensor forward(const ModelInputs& in);
  Embedding& token_embedding() { return *embed_tokens; }
  std::shared_ptr<GemmaScaledEmbedding> embed_tokens;
  std::shared_ptr<ModuleList<GemmaDecoderLayer>> layers;
  std::shared_ptr<GemmaRMSNorm> norm;

 private:
  std::string arch_;
  RotaryEmbedding rope_global_, rope_local_;
  int64_t sliding_window_;
};

class GemmaForCausalLM : public CausalLMBase {
 public:
  GemmaForCausalLM(const nlohmann::json& j, const std::string& arch, const std::string& where);
  std::string type_name() const override { return cfg_.arch + "ForCausalLM"; }
  int64_t num_cache_layers() const override { return cfg_.num_layers; }
  std::string base_model_prefix() const override { return "model"; }
  ModelOutputs run(const ModelInputs& in) override;
  // With final soft-capping the logits are not lm_head's alone: callers must take them
  // from forward() rather than apply the head themselves.
  AdaptableLayer* output_layer() override { return cfg_.final_softcap ? nullptr : lm_head.get(); }

  std::shared_ptr<GemmaModel> model;

 protected:
  at::Tensor body_forward(const ModelInputs& in) override { return model->forward(in); }
  Embedding& input_embedding() override { return *model->embed_tokens; }

 private:
  GemmaForCausalLM(const nlohmann::json& j, GemmaConfig cfg);
  GemmaConfig cfg_;
};

// GemmaForSequenceClassification, Gemma2ForSequenceClassification (arch "Gemma", "Gemma2"):
// the body and `score` on each row's last non-pad token (no logit soft-capping there).
std::shared_ptr<Model> make_gemma_classifier(const nlohmann::json& j, const std::string& arch, const std::string& where);

}  // namespace peft
