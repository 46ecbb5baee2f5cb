// Phi-3 (Phi3ForCausalLM): LLaMA's block with fused projections, qkv_proj (queries, keys,
// values in that order along the output) and gate_up_proj (gate, then up), so adapters
// target the fused layers as HF PEFT does.
#pragma once

#include "models/attention.h"
#include "models/lm_head.h"
#include "models/model_config.h"
#include "peft/layers.h"
#include "peft/model.h"

namespace peft {

class Phi3Attention : public Module {
 public:
  explicit Phi3Attention(const LlamaConfig& c);
  std::string type_name() const override { return "Phi3Attention"; }
  at::Tensor forward(const at::Tensor& h, const RotaryEmbedding::Angles& rope, const at::Tensor& mask,
                     KVCache* cache, size_t layer);
  std::shared_ptr<Linear> o_proj, qkv_proj;  // transformers' registration order

 private:
  int64_t heads_, kv_heads_, head_dim_;
};

class Phi3MLP : public AdaptableLayer {  // adaptable: parallel adapters sit beside it
 public:
  explicit Phi3MLP(const LlamaConfig& c);
  std::string type_name() const override { return "Phi3MLP"; }
  LayerKind kind() const override { return LayerKind::kBlock; }
  at::Tensor base_forward(const at::Tensor& x) override;
  int64_t input_dim() const override { return gate_up_proj->in_features; }
  int64_t output_dim() const override { return down_proj->out_features; }
  std::shared_ptr<Linear> gate_up_proj, down_proj;

 private:
  std::string act_;
};

class Phi3DecoderLayer : public Module {
 public:
  explicit Phi3DecoderLayer(const LlamaConfig& c);
  std::string type_name() const override { return "Phi3DecoderLayer"; }
  at::Tensor forward(const at::Tensor& h, const RotaryEmbedding::Angles& rope, const at::Tensor& mask,
                     KVCache* cache, size_t layer);
  std::shared_ptr<Phi3Attention> self_attn;
  std::shared_ptr<Phi3MLP> mlp;
  std::shared_ptr<RMSNorm> input_layernorm, post_attention_layernorm;
};

class Phi3Model : public Module {
 public:
  explicit Phi3Model(const LlamaConfig& c);
  std::string type_name() const override { return "Phi3Model"; }
  at::Tensor forward(const ModelInputs& in);
  std::shared_ptr<Embedding> embed_tokens;
  std::shared_ptr<ModuleList<Phi3DecoderLayer>> layers;
  std::shared_ptr<RMSNorm> norm;

 private:
  RotaryEmbedding rope_;
  int64_t sliding_window_;  // 0: none; else every layer's window
};

class Phi3ForCausalLM : public CausalLMBase {
 public:
  Phi3ForCausalLM(const nlohmann::json& j, const std::string& where);
  std::string type_name() const override { return "Phi3ForCausalLM"; }
  int64_t num_cache_layers() const override { return cfg_.num_layers; }
  std::string base_model_prefix() const override { return "model"; }

  std::shared_ptr<Phi3Model> model;

 protected:
  at::Tensor body_forward(const ModelInputs& in) override { return model->forward(in); }
  Embedding& input_embedding() override { return *model->embed_tokens; }

 private:
  Phi3ForCausalLM(const nlohmann::json& j, LlamaConfig cfg);
  LlamaConfig cfg_;
};

}  // namespace peft
