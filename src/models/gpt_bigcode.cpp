#include "models/gpt_bigcode.h"

#include <ATen/ATen.h>

#include <cmath>

#include "models/attention.h"
#include "models/checkpoint.h"
#include "models/seq_cls_head.h"
#include "models/config_reader.h"
#include "models/model_config.h"

namespace peft {

GPTBigCodeConfig GPTBigCodeConfig::from_json(const nlohmann::json& j, const std::string& where) {
  GPTBigCodeConfig c;
  static_cast<GPT2Config&>(c) = GPT2Config::from_json(j, where);
  c.multi_query = ConfigReader(j, where).get<bool>("multi_query", true);
  return c;
}

GPTBigCodeAttention::GPTBigCodeAttention(const GPTBigCodeConfig& c)
    : multi_query_(c.multi_query), heads_(c.n_head), head_dim_(c.n_embd / c.n_head),
      scale_(c.scale_attn_weights ? 1.0 / std::sqrt(static_cast<double>(c.n_embd / c.n_head)) : 1.0) {
  const int64_t kv_dim = (multi_query_ ? 1 : heads_) * head_dim_;
  c_attn = register_module("c_attn", std::make_shared<Linear>(c.n_embd, c.n_embd + 2 * kv_dim, true));
  c_proj = register_module("c_proj", std::make_shared<Linear>(c.n_embd, c.n_embd, true));
}

at::Tensor GPTBigCodeAttention::forward(const at::Tensor& h, const at::Tensor& mask, KVCache* cache, size_t layer) {
  const int64_t b = h.size(0), s = h.size(1), d = head_dim_;
  auto fused = c_attn->forward(h);
  at::Tensor q, k, v;  // [b, heads or 1, s, d]
  if (multi_query_) {
    q = split_heads(fused.narrow(-1, 0, heads_ * d), heads_, d);
    k = fused.narrow(-1, heads_ * d, d).unsqueeze(1);
    v = fused.narrow(-1, heads_ * d + d, d).unsqueeze(1);
  } else {  // each head's query, key, value side by side
    auto x = fused.view({b, s, heads_, 3 * d}).transpose(1, 2);
    q = x.narrow(-1, 0, d), k = x.narrow(-1, d, d), v = x.narrow(-1, 2 * d, d);
  }
  update_cache(cache, layer, k, v);
  return c_proj->forward(attend(q, k, v, mask, scale_, /*is_causal=*/true));
}

GPTBigCodeMLP::GPTBigCodeMLP(const GPTBigCodeConfig& c) : act_(c.activation_function) {
  c_fc = register_module("c_fc", std::make_shared<Linear>(c.n_embd, c.n_inner, true));
  c_proj = register_module("c_proj", std::make_shared<Linear>(c.n_inner, c.n_embd, true));
}

at::Tensor GPTBigCodeMLP::base_forward(const at::Tensor& x) { return c_proj->forward(activation(act_, c_fc->forward(x))); }

GPTBigCodeBlock::GPTBigCodeBlock(const GPTBigCodeConfig& c) {
  ln_1 = register_module("ln_1", std::make_shared<LayerNorm>(c.n_embd, c.layer_norm_epsilon));
  attn = register_module("attn", std::make_shared<GPTBigCodeAttention>(c));
  ln_2 = register_module("ln_2", std::make_shared<LayerNorm>(c.n_embd, c.layer_norm_epsilon));
  mlp = register_module("mlp", std::make_shared<GPTBigCodeMLP>(c));
}

at::Tensor GPTBigCodeBlock::forward(const at::Tensor& h, const at::Tensor& mask, KVCache* cache, size_t layer) {
  auto x = attn->forward(ln_1->forward(h), mask, cache, layer) + h;
  return x + mlp->forward(ln_2->forward(x));
}

GPTBigCodeModel::GPTBigCodeModel(const GPTBigCodeConfig& c) {
  wte = register_module("wte", std::make_shared<Embedding>(c.vocab_size, c.n_embd));
  wpe = register_module("wpe", std::make_shared<Embedding>(c.n_positions, c.n_embd));
  h = register_module("h", std::make_shared<ModuleList<GPTBigCodeBlock>>());
  for (int64_t i = 0; i < c.n_layer; ++i) h->push_back(std::make_shared<GPTBigCodeBlock>(c));
  ln_f = register_module("ln_f", std::make_shared<LayerNorm>(c.n_embd, c.layer_norm_epsilon));
}

at::Tensor GPTBigCodeModel::forward(const ModelInputs& in) {
  const auto step = begin_decoder_step(in, h->size(), wte->weight.device());
  auto x = (in.inputs_embeds.defined() ? in.inputs_embeds : wte->forward(in.input_ids)) + wpe->forward(step.positions);
  x = run_decoder_blocks(h->size(), x, in, [this, mask = step.mask](size_t i, const at::Tensor& t, KVCache* c) {
    return (*h)[i].forward(t, mask, c, i);
  });
  return ln_f->forward(x);
}

GPTBigCodeForCausalLM::GPTBigCodeForCausalLM(const nlohmann::json& j, const std::string& where)
    : GPTBigCodeForCausalLM(j, GPTBigCodeConfig::from_json(j, where)) {}

GPTBigCodeForCausalLM::GPTBigCodeForCausalLM(const nlohmann::json& j, GPTBigCodeConfig cfg)
    : CausalLMBase(j, cfg.tie_word_embeddings), cfg_(std::move(cfg)) {
  transformer = register_module("transformer", std::make_shared<GPTBigCodeModel>(cfg_));
  add_lm_head(cfg_.n_embd, cfg_.vocab_size);
}

std::shared_ptr<Model> make_gpt_bigcode_classifier(const nlohmann::json& j, const std::string& where) {
  auto c = GPTBigCodeConfig::from_json(j, where);
  return std::make_shared<DecoderForSequenceClassification<GPTBigCodeModel>>(j, where, "GPTBigCodeForSequenceClassification", "transformer",
                                                                     std::make_shared<GPTBigCodeModel>(c), c.n_embd,
                                                                     c.n_layer, c.n_positions);
}

}  // namespace peft
