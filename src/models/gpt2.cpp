#include "models/gpt2.h"

#include <ATen/ATen.h>

#include <cmath>

#include "models/checkpoint.h"
#include "models/config_reader.h"

namespace peft {


GPT2Attention::GPT2Attention(const GPT2Config& c, int64_t layer)
    : heads_(c.n_head), head_dim_(c.n_embd / c.n_head) {
  c_attn = register_module("c_attn", std::make_shared<Conv1D>(c.n_embd, 3 * c.n_embd));
  c_proj = register_module("c_proj", std::make_shared<Conv1D>(c.n_embd, c.n_embd));
  scale_ = c.scale_attn_weights ? 1.0 / std::sqrt(static_cast<double>(head_dim_)) : 1.0;
  if (c.scale_attn_by_inverse_layer_idx) scale_ /= static_cast<double>(layer + 1);
}

at::Tensor GPT2Attention::forward(const at::Tensor& h, const at::Tensor& mask, KVCache* cache, size_t layer) {
  auto qkv = c_attn->forward(h).split(heads_ * head_dim_, -1);
  auto q = split_heads(qkv[0], heads_, head_dim_);
  auto k = split_heads(qkv[1], heads_, head_dim_);
  auto v = split_heads(qkv[2], heads_, head_dim_);
  update_cache(cache, layer, k, v);
  return extended(c_proj->forward(attend(q, k, v, mask, scale_, /*is_causal=*/true)), h, q);
}

GPT2MLP::GPT2MLP(const GPT2Config& c) : act_(c.activation_function) {
  c_fc = register_module("c_fc", std::make_shared<Conv1D>(c.n_embd, c.n_inner));
  c_proj = register_module("c_proj", std::make_shared<Conv1D>(c.n_inner, c.n_embd));
}

at::Tensor GPT2MLP::base_forward(const at::Tensor& x) { return c_proj->forward(activation(act_, c_fc->forward(x))); }

GPT2Block::GPT2Block(const GPT2Config& c, int64_t layer) {
  ln_1 = register_module("ln_1", std::make_shared<LayerNorm>(c.n_embd, c.layer_norm_epsilon));
  attn = register_module("attn", std::make_shared<GPT2Attention>(c, layer));
  ln_2 = register_module("ln_2", std::make_shared<LayerNorm>(c.n_embd, c.layer_norm_epsilon));
  mlp = register_module("mlp", std::make_shared<GPT2MLP>(c));
}

at::Tensor GPT2Block::forward(const at::Tensor& h, const at::Tensor& mask, KVCache* cache, size_t layer) {
  auto x = h + attn->forward(ln_1->forward(h), mask, cache, layer);
  return x + mlp->forward(ln_2->forward(x));
}

GPT2Model::GPT2Model(const GPT2Config& c) {
  wte = register_module("wte", std::make_shared<Embedding>(c.vocab_size, c.n_embd));
  wpe = register_module("wpe", std::make_shared<Embedding>(c.n_positions, c.n_embd));
  h = register_module("h", std::make_shared<ModuleList<GPT2Block>>());
  for (int64_t i = 0; i < c.n_layer; ++i) h->push_back(std::make_shared<GPT2Block>(c, i));
  ln_f = register_module("ln_f", std::make_shared<LayerNorm>(c.n_embd, c.layer_norm_epsilon));
}

at::Tensor GPT2Model::forward(const ModelInputs& in) {
  KVCache* cache = in.cache;
  const auto step = begin_decoder_step(in, h->size(), wte->weight.device());
  const auto& mask = step.mask;
  auto x = (in.inputs_embeds.defined() ? in.inputs_embeds : wte->forward(in.input_ids)) + wpe->forward(step.positions);
  for (size_t i = 0; i < h->size(); ++i) {
    auto& block = (*h)[i];
    if (in.before_layer) x = in.before_layer(i, x);
    if (in.checkpoint_layers && !cache)
      x = checkpointed([&block, mask, i](const at::Tensor& t) { return block.forward(t, mask, nullptr, i); }, x);
    else
      x = block.forward(x, mask, cache, i);
    if (in.after_layer) x = in.after_layer(i, x);
  }
  return ln_f->forward(x);
}

GPT2LMHeadModel::GPT2LMHeadModel(const nlohmann::json& j, const std::string& where)
    : GPT2LMHeadModel(j, GPT2Config::from_json(j, where)) {}

GPT2LMHeadModel::GPT2LMHeadModel(const nlohmann::json& j, GPT2Config cfg)
    : CausalLMBase(j, cfg.tie_word_embeddings), cfg_(std::move(cfg)) {
  transformer = register_module("transformer", std::make_shared<GPT2Model>(cfg_));
  add_lm_head(cfg_.n_embd, cfg_.vocab_size);
}

}  // namespace peft
