// GPT-2: GPT2LMHeadModel with transformers' names (Conv1D weights stored [in, out]).
#pragma once

#include "models/model_config.h"

#include "models/attention.h"
#include "models/lm_head.h"
#include "peft/layers.h"
#include "peft/model.h"

namespace peft {


class GPT2Attention : public ExtensibleAttention {
 public:
  GPT2Attention(const GPT2Config& c, int64_t layer);
  std::string type_name() const override { return "GPT2Attention"; }
  at::Tensor forward(const at::Tensor& h, const at::Tensor& mask, KVCache* cache, size_t layer);
  std::shared_ptr<Conv1D> c_attn, c_proj;

 private:
  int64_t heads_, head_dim_;
  double scale_;
};

class GPT2MLP : public AdaptableLayer {  // adaptable: parallel adapters sit beside it
 public:
  explicit GPT2MLP(const GPT2Config& c);
  std::string type_name() const override { return "GPT2MLP"; }
  LayerKind kind() const override { return LayerKind::kBlock; }
  at::Tensor base_forward(const at::Tensor& x) override;
  int64_t input_dim() const override { return c_fc->in_features; }
  int64_t output_dim() const override { return c_proj->out_features; }
  std::shared_ptr<Conv1D> c_fc, c_proj;

 private:
  std::string act_;
};

class GPT2Block : public Module {
 public:
  GPT2Block(const GPT2Config& c, int64_t layer);
  std::string type_name() const override { return "GPT2Block"; }
  at::Tensor forward(const at::Tensor& h, const at::Tensor& mask, KVCache* cache, size_t layer);
  std::shared_ptr<LayerNorm> ln_1, ln_2;
  std::shared_ptr<GPT2Attention> attn;
  std::shared_ptr<GPT2MLP> mlp;
};

class GPT2Model : public Module {
 public:
  explicit GPT2Model(const GPT2Config& c);
  std::string type_name() const override { return "GPT2Model"; }
  at::Tensor forward(const ModelInputs& in);
  std::shared_ptr<Embedding> wte, wpe;
  std::shared_ptr<ModuleList<GPT2Block>> h;
  std::shared_ptr<LayerNorm> ln_f;
};

class GPT2LMHeadModel : public CausalLMBase {
 public:
  GPT2LMHeadModel(const nlohmann::json& j, const std::string& where);
  std::string type_name() const override { return "GPT2LMHeadModel"; }
  int64_t num_cache_layers() const override { return cfg_.n_layer; }
  int64_t max_positions() const override { return cfg_.n_positions; }
  std::string base_model_prefix() const override { return "transformer"; }

  std::shared_ptr<GPT2Model> transformer;

 protected:
  at::Tensor body_forward(const ModelInputs& in) override { return transformer->forward(in); }
  Embedding& input_embedding() override { return *transformer->wte; }

 private:
  GPT2LMHeadModel(const nlohmann::json& j, GPT2Config cfg);
  GPT2Config cfg_;
};

}  // namespace peft
