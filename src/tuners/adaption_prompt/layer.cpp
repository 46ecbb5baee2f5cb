#include "tuners/adaption_prompt/layer.h"

#include <ATen/ATen.h>

#include <cmath>

namespace peft {

AdaptionPrompts::AdaptionPrompts(Model& model, int64_t head_dim_) : head_dim(head_dim_), model_(&model) {}

AdaptionPrompts::~AdaptionPrompts() {
  for (auto& l : layers)
    if (l->attention->extension == l.get()) l->attention->extension = nullptr;
}

void AdaptionPrompts::add_layer(std::unique_ptr<Layer> layer, const std::string& key_prefix) {
  layer->owner = this;
  register_parameter(key_prefix + ".adaption_prompt", &layer->prompt, layer->prompt.sizes().vec());
  register_parameter(key_prefix + ".adaption_gate", &layer->gate, {1});
  layers.push_back(std::move(layer));
}

int64_t AdaptionPrompts::prepare(Model&, ModelInputs&) {
  for (auto& l : layers) l->attention->extension = l.get();
  return 0;
}

// HF PEFT's AdaptedAttention.forward after the wrapped module's own forward, op for op.
at::Tensor AdaptionPrompts::Layer::extra_output(const at::Tensor& hidden, const at::Tensor& q) {
  if (owner->model_->input_adapter != owner) return {};  // switched off or replaced since prepare()
  const int64_t len = prompt.size(1), hd = owner->head_dim;
  // HF keeps prompt and gate in the weights' dtype, which q has; loading stores float32.
  const auto dtype = q.scalar_type();
  const auto p = prompt.to(dtype);
  at::Tensor key, value;
  if (v) {
    key = k->forward(p);
    value = v->forward(p);
  } else {  // GPT-2's c_attn: query, key, value side by side
    auto qkv = k->forward(p).split(p.size(2), 2);
    key = qkv[1];
    value = qkv[2];
  }
  const int64_t kv_heads = key.size(2) / hd, factor = q.size(1) / kv_heads;
  // [1, heads, len, hd]: key/value heads repeated for grouped-query attention; the batch
  // dimension broadcasts (HF repeats it).
  auto ak = key.view({1, len, kv_heads, hd}).transpose(1, 2).repeat_interleave(factor, 1);
  auto av = value.view({1, len, kv_heads, hd}).transpose(1, 2).repeat_interleave(factor, 1);
  auto scores = at::matmul(q, ak.transpose(2, 3).to(dtype)) / std::sqrt(static_cast<double>(hd));
  scores = gate.to(dtype) * at::softmax(scores, -1, at::kFloat).to(dtype);
  auto out = at::matmul(scores, av).transpose(1, 2).reshape({hidden.size(0), hidden.size(1), -1});
  return o ? o->forward(out) : out;
}

}  // namespace peft
