#include "tuners/prompt/soft_prompt.h"

#include <ATen/ATen.h>

#include "peft/layers.h"

namespace peft {

namespace {
at::Tensor prepend_ones(const at::Tensor& mask, int64_t n) {
  return at::cat({at::ones({mask.size(0), n}, mask.options()), mask}, 1);
}
}  // namespace

SoftPrompt::SoftPrompt(int64_t n_, int64_t dim_, const std::string& slot) : n(n_), dim(dim_) {
  embedding = at::zeros({n, dim}, at::kFloat);
  register_parameter(slot, &embedding, {n, dim});
}

int64_t SoftPrompt::prepare(Model& model, ModelInputs& in) {
  const int64_t b = in.batch_size();
  if (in.attention_mask.defined()) in.attention_mask = prepend_ones(in.attention_mask, n);
  if (in.cache && in.cache->length() > 0) {  // a later generation step: prompts are cached
    if (in.position_ids.defined()) in.position_ids = in.position_ids + n;
    return 0;
  }
  Embedding* emb = model.input_embeddings();
  if (!emb) throw std::invalid_argument(model.type_name() + " has no token embedding to prepend soft prompts to");
  auto embeds = in.inputs_embeds.defined() ? in.inputs_embeds : emb->forward(in.input_ids);
  auto p = prompts().to(embeds.scalar_type()).unsqueeze(0).expand({b, n, dim});
  in.inputs_embeds = at::cat({p, embeds}, 1);
  in.input_ids = at::Tensor();
  if (in.token_type_ids.defined())
    in.token_type_ids = at::cat({at::zeros({b, n}, in.token_type_ids.options()), in.token_type_ids}, 1);
  if (in.position_ids.defined()) {
    auto pre = at::arange(n, in.position_ids.options()).unsqueeze(0).expand({b, n});
    in.position_ids = at::cat({pre, in.position_ids + n}, 1);
  }
  return n;
}

std::vector<std::pair<std::string, at::Tensor>> SoftPrompt::saved_tensors() {
  return {{"prompt_embeddings", prompts().detach()}};
}

PromptEncoder::PromptEncoder(int64_t n_, int64_t dim_, int64_t hidden, bool use_lstm_, int64_t layers, double drop)
    : SoftPrompt(n_, dim_, "embedding.weight"), use_lstm(use_lstm_), lstm_layers(layers), dropout(drop) {
  // HF's parameter names and shapes; the tensors are created before any is registered so
  // that the slot pointers into the vectors stay valid.
  std::vector<std::pair<std::string, std::vector<int64_t>>> mlp_shapes, lstm_shapes;
  if (use_lstm) {
    for (int64_t l = 0; l < layers; ++l)
      for (const std::string dir : {"", "_reverse"}) {
        const int64_t in = l == 0 ? dim : 2 * hidden;
        const std::string s = "_l" + std::to_string(l) + dir;
        lstm_shapes.push_back({"lstm_head.weight_ih" + s, {4 * hidden, in}});
        lstm_shapes.push_back({"lstm_head.weight_hh" + s, {4 * hidden, hidden}});
        lstm_shapes.push_back({"lstm_head.bias_ih" + s, {4 * hidden}});
        lstm_shapes.push_back({"lstm_head.bias_hh" + s, {4 * hidden}});
      }
    mlp_shapes = {{"mlp_head.0.weight", {2 * hidden, 2 * hidden}}, {"mlp_head.0.bias", {2 * hidden}},
                  {"mlp_head.2.weight", {dim, 2 * hidden}},        {"mlp_head.2.bias", {dim}}};
  } else {
    mlp_shapes = {{"mlp_head.0.weight", {hidden, dim}},    {"mlp_head.0.bias", {hidden}},
                  {"mlp_head.2.weight", {hidden, hidden}}, {"mlp_head.2.bias", {hidden}},
                  {"mlp_head.4.weight", {dim, hidden}},    {"mlp_head.4.bias", {dim}}};
  }
  for (const auto& [name, shape] : lstm_shapes) lstm.push_back(at::zeros(shape, at::kFloat));
  for (const auto& [name, shape] : mlp_shapes) mlp.push_back(at::zeros(shape, at::kFloat));
  for (size_t i = 0; i < lstm.size(); ++i) register_parameter(lstm_shapes[i].first, &lstm[i], lstm_shapes[i].second);
  for (size_t i = 0; i < mlp.size(); ++i) register_parameter(mlp_shapes[i].first, &mlp[i], mlp_shapes[i].second);
}

at::Tensor PromptEncoder::prompts() {
  at::Tensor h = embedding.unsqueeze(0);  // [1, n, dim]
  if (use_lstm) {
    auto hx = at::zeros({2 * lstm_layers, 1, lstm[1].size(1)}, h.options());
    h = std::get<0>(at::lstm(h, {hx, hx}, lstm, /*has_biases=*/true, lstm_layers, dropout, training,
                             /*bidirectional=*/true, /*batch_first=*/true));
  }
  for (size_t i = 0; i < mlp.size(); i += 2) {
    h = at::linear(h, mlp[i], mlp[i + 1]);
    if (i + 2 < mlp.size()) h = at::relu(h);
  }
  return h.squeeze(0);
}

PrefixEncoder::PrefixEncoder(int64_t n_, int64_t layers_, int64_t heads_, int64_t head_dim_, bool proj,
                             int64_t token_dim, int64_t hidden)
    : n(n_), layers(layers_), heads(heads_), head_dim(head_dim_), projection(proj) {
  const int64_t out = layers * 2 * heads * head_dim;
  if (!projection) {
    embedding = at::zeros({n, out}, at::kFloat);
    register_parameter("prompt_embeddings", &embedding, {n, out});
    return;
  }
  embedding = at::zeros({n, token_dim}, at::kFloat);
  register_parameter("embedding.weight", &embedding, {n, token_dim});
  transform = {at::zeros({hidden, token_dim}, at::kFloat), at::zeros({hidden}, at::kFloat),
               at::zeros({out, hidden}, at::kFloat), at::zeros({out}, at::kFloat)};
  register_parameter("transform.0.weight", &transform[0], {hidden, token_dim});
  register_parameter("transform.0.bias", &transform[1], {hidden});
  register_parameter("transform.2.weight", &transform[2], {out, hidden});
  register_parameter("transform.2.bias", &transform[3], {out});
}

at::Tensor PrefixEncoder::past() {
  if (!projection) return embedding;
  return at::linear(at::tanh(at::linear(embedding, transform[0], transform[1])), transform[2], transform[3]);
}

std::vector<std::pair<std::string, at::Tensor>> PrefixEncoder::saved_tensors() {
  return {{"prompt_embeddings", past().detach()}};
}

int64_t PrefixEncoder::prepare(Model& model, ModelInputs& in) {
  if (model.num_cache_layers() != layers)
    throw std::invalid_argument("prefix tuning: the adapter has " + std::to_string(layers) + " layers, " +
                                model.type_name() + " has " + std::to_string(model.num_cache_layers()) +
                                " decoder layers with a KV cache");
  const int64_t b = in.batch_size();
  if (!in.cache) {
    scratch_ = KVCache{};
    in.cache = &scratch_;
  }
  if (in.cache->length() == 0) {
    const auto dtype = model.named_parameters().front().second.scalar_type();
    // HF's layout: [n, layers * 2, heads, head_dim] -> [layers * 2, batch, heads, n, head_dim].
    auto kv = past().to(dtype).view({1, n, layers * 2, heads, head_dim}).expand({b, n, layers * 2, heads, head_dim});
    kv = kv.permute({2, 0, 3, 1, 4});
    in.cache->keys.resize(layers);
    in.cache->values.resize(layers);
    for (int64_t l = 0; l < layers; ++l) {
      in.cache->keys[l] = kv[2 * l];
      in.cache->values[l] = kv[2 * l + 1];
    }
  }
  if (in.attention_mask.defined()) in.attention_mask = prepend_ones(in.attention_mask, n);
  if (in.position_ids.defined()) in.position_ids = in.position_ids + n;
  return 0;
}

VisualPrompts::VisualPrompts(int64_t layers, int64_t n_, int64_t hidden, bool deep_) : n(n_), deep(deep_) {
  const int64_t lp = deep ? layers : 1;
  vpt_prompts = at::zeros({lp, n, hidden}, at::kFloat);
  register_parameter("vpt_prompts", &vpt_prompts, {lp, n, hidden});
}

int64_t VisualPrompts::prepare(Model&, ModelInputs& in) {
  in.before_layer = [this](size_t i, const at::Tensor& h) -> at::Tensor {
    const int64_t b = h.size(0);
    auto prompt = [&](size_t k) { return vpt_prompts[k].to(h.scalar_type()).unsqueeze(0).expand({b, n, h.size(2)}); };
    if (i == 0) return at::cat({h.narrow(1, 0, 1), prompt(0), h.narrow(1, 1, h.size(1) - 1)}, 1);
    if (!deep) return h;
    return at::cat({h.narrow(1, 0, 1), prompt(i), h.narrow(1, 1 + n, h.size(1) - 1 - n)}, 1);
  };
  return 0;
}

}  // namespace peft
