// LLaMA-family decoders: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM,
// Qwen3ForCausalLM (per-head q_norm / k_norm), and the same bodies as sequence
// classifiers (<Arch>ForSequenceClassification). Layers marked sliding (Mistral's and
// Qwen3's sliding_window) attend within the window.
#pragma once

#include "models/model_config.h"

#include "models/attention.h"
#include "models/lm_head.h"
#include "models/seq_cls_head.h"
#include "peft/layers.h"
#include "peft/model.h"

namespace peft {


class LlamaAttention : public ExtensibleAttention {
 public:
  // `rotary` false: queries and keys keep no position (SmolLM3's NoPE layers).
  explicit LlamaAttention(const LlamaConfig& c, bool rotary = true);
  std::string type_name() const override { return arch_ + "Attention"; }
  at::Tensor forward(const at::Tensor& h, const RotaryEmbedding::Angles& rope, const at::Tensor& mask,
                     KVCache* cache, size_t layer);
  std::shared_ptr<Linear> q_proj, k_proj, v_proj, o_proj;
  std::shared_ptr<RMSNorm> q_norm, k_norm;  // Qwen3 only

 private:
  std::string arch_;
  bool rotary_;
  int64_t heads_, kv_heads_, head_dim_;
  double scale_;
};

class LlamaMLP : public AdaptableLayer {  // adaptable: parallel adapters sit beside it
 public:
  explicit LlamaMLP(const LlamaConfig& c);
  std::string type_name() const override { return arch_ + "MLP"; }
  LayerKind kind() const override { return LayerKind::kBlock; }
  at::Tensor base_forward(const at::Tensor& x) override;
  int64_t input_dim() const override { return gate_proj->in_features; }
  int64_t output_dim() const override { return down_proj->out_features; }
  std::shared_ptr<Linear> gate_proj, up_proj, down_proj;

 private:
  std::string arch_, act_;
};

class LlamaDecoderLayer : public Module {
 public:
  // Layer `index` of the model: its sliding window and rotary embedding from the config.
  LlamaDecoderLayer(const LlamaConfig& c, size_t index);
  bool sliding() const { return sliding_; }
  std::string type_name() const override { return arch_ + "DecoderLayer"; }
  at::Tensor forward(const at::Tensor& h, const RotaryEmbedding::Angles& rope, const at::Tensor& mask,
                     KVCache* cache, size_t layer);
  std::shared_ptr<LlamaAttention> self_attn;
  std::shared_ptr<LlamaMLP> mlp;
  std::shared_ptr<RMSNorm> input_layernorm, post_attention_layernorm;

 private:
  std::string arch_;
  bool sliding_;
  double residual_multiplier_;
};

class LlamaModel : public Module {
 public:
  explicit LlamaModel(const LlamaConfig& c);
  std::string type_name() const override { return arch_ + "Model"; }
  // Final hidden states [batch, seq, hidden].
  at::Tensor forward(const ModelInputs& in);
  std::shared_ptr<Embedding> embed_tokens;
  std::shared_ptr<ModuleList<LlamaDecoderLayer>> layers;
  std::shared_ptr<RMSNorm> norm;

 private:
  std::string arch_;
  RotaryEmbedding rope_;
  int64_t sliding_window_;
  double embedding_multiplier_;
};

class LlamaForCausalLM : public CausalLMBase {
 public:
  LlamaForCausalLM(const nlohmann::json& j, const std::string& arch, const std::string& where);
  std::string type_name() const override { return cfg_.arch + "ForCausalLM"; }
  int64_t num_cache_layers() const override { return cfg_.num_layers; }
  std::string base_model_prefix() const override { return "model"; }
  ModelOutputs run(const ModelInputs& in) override;
  // Granite divides the logits by logits_scaling: then they are not lm_head's alone, and
  // callers take them from forward() rather than apply the head themselves.
  AdaptableLayer* output_layer() override { return cfg_.logits_scaling != 1.0 ? nullptr : lm_head.get(); }

  std::shared_ptr<LlamaModel> model;

 protected:
  at::Tensor body_forward(const ModelInputs& in) override { return model->forward(in); }
  Embedding& input_embedding() override { return *model->embed_tokens; }

 private:
  LlamaForCausalLM(const nlohmann::json& j, LlamaConfig cfg);
  LlamaConfig cfg_;
};

// The body and `score` on the last non-pad token (transformers' GenericForSequenceClassification).
class LlamaForSequenceClassification : public DecoderClassifierBase {
 public:
  LlamaForSequenceClassification(const nlohmann::json& j, const std::string& arch, const std::string& where);
  std::string type_name() const override { return cfg_.arch + "ForSequenceClassification"; }
  int64_t num_cache_layers() const override { return cfg_.num_layers; }
  std::string base_model_prefix() const override { return "model"; }

  std::shared_ptr<LlamaModel> model;

 protected:
  at::Tensor body_forward(const ModelInputs& in) override { return model->forward(in); }
  Embedding& input_embedding() override { return *model->embed_tokens; }

 private:
  LlamaForSequenceClassification(const nlohmann::json& j, const std::string& where, LlamaConfig cfg);
  LlamaConfig cfg_;
};

}  // namespace peft
