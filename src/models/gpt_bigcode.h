// GPTBigCode (GPTBigCodeForCausalLM: SantaCoder, StarCoder 1, tiny_starcoder): GPT-2's block
// with Linear layers, learned positions, and multi-query attention (one key/value head
// shared by every query head: c_attn's output is all queries, then the key, then the value)
// or, without multi_query, a per-head fused c_attn.
#pragma once

#include "models/lm_head.h"
#include "models/model_config.h"
#include "peft/layers.h"
#include "peft/model.h"

namespace peft {

// GPT-2's keys, defaults and checks (GPTBigCode's default activation, gelu_pytorch_tanh,
// computes what GPT-2's gelu_new does), plus multi_query.
struct GPTBigCodeConfig : GPT2Config {
  bool multi_query;
  static GPTBigCodeConfig from_json(const nlohmann::json& j, const std::string& where);
};

class GPTBigCodeAttention : public Module {
 public:
  explicit GPTBigCodeAttention(const GPTBigCodeConfig& c);
  std::string type_name() const override { return "GPTBigCodeAttention"; }
  at::Tensor forward(const at::Tensor& h, const at::Tensor& mask, KVCache* cache, size_t layer);
  std::shared_ptr<Linear> c_attn, c_proj;

 private:
  bool multi_query_;
  int64_t heads_, head_dim_;
  double scale_;
};

class GPTBigCodeMLP : public AdaptableLayer {  // adaptable: parallel adapters sit beside it
 public:
  explicit GPTBigCodeMLP(const GPTBigCodeConfig& c);
  std::string type_name() const override { return "GPTBigCodeMLP"; }
  LayerKind kind() const override { return LayerKind::kBlock; }
  at::Tensor base_forward(const at::Tensor& x) override;
  int64_t input_dim() const override { return c_fc->in_features; }
  int64_t output_dim() const override { return c_proj->out_features; }
  std::shared_ptr<Linear> c_fc, c_proj;

 private:
  std::string act_;
};

class GPTBigCodeBlock : public Module {
 public:
  explicit GPTBigCodeBlock(const GPTBigCodeConfig& c);
  std::string type_name() const override { return "GPTBigCodeBlock"; }
  at::Tensor forward(const at::Tensor& h, const at::Tensor& mask, KVCache* cache, size_t layer);
  std::shared_ptr<LayerNorm> ln_1, ln_2;
  std::shared_ptr<GPTBigCodeAttention> attn;
  std::shared_ptr<GPTBigCodeMLP> mlp;
};

class GPTBigCodeModel : public Module {
 public:
  explicit GPTBigCodeModel(const GPTBigCodeConfig& c);
  std::string type_name() const override { return "GPTBigCodeModel"; }
  at::Tensor forward(const ModelInputs& in);
  Embedding& token_embedding() { return *wte; }
  std::shared_ptr<Embedding> wte, wpe;
  std::shared_ptr<ModuleList<GPTBigCodeBlock>> h;
  std::shared_ptr<LayerNorm> ln_f;
};

class GPTBigCodeForCausalLM : public CausalLMBase {
 public:
  GPTBigCodeForCausalLM(const nlohmann::json& j, const std::string& where);
  std::string type_name() const override { return "GPTBigCodeForCausalLM"; }
  int64_t num_cache_layers() const override { return cfg_.n_layer; }
  int64_t max_positions() const override { return cfg_.n_positions; }
  std::string base_model_prefix() const override { return "transformer"; }

  std::shared_ptr<GPTBigCodeModel> transformer;

 protected:
  at::Tensor body_forward(const ModelInputs& in) override { return transformer->forward(in); }
  Embedding& input_embedding() override { return *transformer->wte; }

 private:
  GPTBigCodeForCausalLM(const nlohmann::json& j, GPTBigCodeConfig cfg);
  GPTBigCodeConfig cfg_;
};

// GPTBigCodeForSequenceClassification: the body and `score` on each row's last non-pad token.
std::shared_ptr<Model> make_gpt_bigcode_classifier(const nlohmann::json& j, const std::string& where);

}  // namespace peft
