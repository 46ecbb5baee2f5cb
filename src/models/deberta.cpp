#include "models/deberta.h"

#include <ATen/ATen.h>

#include <cmath>

#include "models/attention.h"
#include "models/checkpoint.h"
#include "models/model_config.h"

namespace peft {

namespace {

// x [b, h, q, k] through a Linear over the head dimension (talking heads).
at::Tensor mix_heads(Linear& proj, const at::Tensor& x) {
  return proj.forward(x.permute({0, 2, 3, 1})).permute({0, 3, 1, 2});
}

}  // namespace

DebertaSelfAttention::DebertaSelfAttention(const DebertaV2Config& c) : c_(c) {
  const int64_t all = c.num_heads * c.head_dim;
  in_proj = register_module("in_proj", std::make_shared<Linear>(c.hidden_size, 3 * all, false));
  register_parameter("q_bias", &q_bias, {all});
  register_parameter("v_bias", &v_bias, {all});
  if (c.talking_head) {
    head_logits_proj = register_module("head_logits_proj", std::make_shared<Linear>(c.num_heads, c.num_heads, false));
    head_weights_proj =
        register_module("head_weights_proj", std::make_shared<Linear>(c.num_heads, c.num_heads, false));
  }
  if (c.relative_attention) {
    if (c.c2p) pos_proj = register_module("pos_proj", std::make_shared<Linear>(c.hidden_size, all, false));
    if (c.p2c) pos_q_proj = register_module("pos_q_proj", std::make_shared<Linear>(c.hidden_size, all, true));
  }
}

at::Tensor DebertaSelfAttention::relative_scores(const at::Tensor& q, const at::Tensor& k,
                                                 const at::Tensor& relative_pos, const at::Tensor& rel_embeddings,
                                                 double scale) {
  const int64_t b = q.size(0), h = q.size(1), s = q.size(2), max_rel = c_.max_relative_positions;
  const int64_t span = std::min(s, max_rel);  // transformers' compute_attention_span
  const auto rel = rel_embeddings.narrow(0, max_rel - span, 2 * span).unsqueeze(0);
  at::Tensor score;
  if (c_.c2p) {  // the queries come in scaled already
    const auto pos_k = split_heads(pos_proj->forward(rel), h, c_.head_dim);
    const auto idx = at::clamp(relative_pos + span, 0, 2 * span - 1).expand({b, h, s, s});
    score = at::gather(at::matmul(q, pos_k.transpose(-1, -2)), -1, idx);
  }
  if (c_.p2c) {
    const auto pos_q = split_heads(pos_q_proj->forward(rel), h, c_.head_dim) / scale;
    const auto idx = at::clamp(-relative_pos + span, 0, 2 * span - 1).expand({b, h, s, s});
    const auto p2c = at::gather(at::matmul(k, pos_q.transpose(-1, -2)), -1, idx).transpose(-1, -2);
    score = score.defined() ? score + p2c : p2c;
  }
  return score;
}

at::Tensor DebertaSelfAttention::forward(const at::Tensor& hidden, const at::Tensor& mask,
                                         const at::Tensor& relative_pos, const at::Tensor& rel_embeddings) {
  const int64_t b = hidden.size(0), s = hidden.size(1), h = c_.num_heads, d = c_.head_dim;
  // in_proj's output holds each head's q, k and v side by side.
  const auto qkv = in_proj->forward(hidden).view({b, s, h, 3 * d}).permute({0, 2, 1, 3}).chunk(3, -1);
  const double scale = std::sqrt(static_cast<float>(d * (1 + c_.pos_att_count)));
  const auto q = (qkv[0] + q_bias.view({1, h, 1, d})) / scale;
  const auto k = qkv[1];
  const auto v = qkv[2] + v_bias.view({1, h, 1, d});
  at::Tensor scores = at::matmul(q, k.transpose(-1, -2));
  if (c_.relative_attention)
    if (auto rel = relative_scores(q, k, relative_pos, rel_embeddings, scale); rel.defined()) scores = scores + rel;
  if (head_logits_proj) scores = mix_heads(*head_logits_proj, scores);
  scores = scores.masked_fill(mask.logical_not(), dtype_lowest(scores.scalar_type()));
  at::Tensor probs = at::softmax(scores, -1);
  if (head_weights_proj) probs = mix_heads(*head_weights_proj, probs);
  return at::matmul(probs, v).transpose(1, 2).reshape({b, s, h * d});
}

DebertaAttention::DebertaAttention(const DebertaV2Config& c) {
  self = register_module("self", std::make_shared<DebertaSelfAttention>(c));
  output = register_module("output", std::make_shared<BertDenseNorm>("DebertaSelfOutput", c.num_heads * c.head_dim,
                                                                     c.hidden_size, c.layer_norm_eps));
}

DebertaLayer::DebertaLayer(const DebertaV2Config& c) {
  attention = register_module("attention", std::make_shared<DebertaAttention>(c));
  intermediate = register_module("intermediate", std::make_shared<DebertaV2Intermediate>(c));
  output = register_module(
      "output", std::make_shared<BertDenseNorm>("DebertaOutput", c.intermediate_size, c.hidden_size, c.layer_norm_eps));
}

at::Tensor DebertaLayer::forward(const at::Tensor& h, const at::Tensor& mask, const at::Tensor& relative_pos,
                                 const at::Tensor& rel_embeddings) {
  const auto a = attention->output->forward(attention->self->forward(h, mask, relative_pos, rel_embeddings), h);
  return output->forward(intermediate->forward(a), a);
}

DebertaEncoder::DebertaEncoder(const DebertaV2Config& c) {
  layer = register_module("layer", std::make_shared<ModuleList<DebertaLayer>>());
  for (int64_t i = 0; i < c.num_layers; ++i) layer->push_back(std::make_shared<DebertaLayer>(c));
  if (c.relative_attention)
    rel_embeddings =
        register_module("rel_embeddings", std::make_shared<Embedding>(2 * c.max_relative_positions, c.hidden_size));
}

DebertaModel::DebertaModel(const nlohmann::json& j, const std::string& where)
    : DebertaBody(j), cfg_(DebertaV2Config::from_json(j, where)) {
  embeddings = register_module("embeddings", std::make_shared<DebertaV2Embeddings>(cfg_));
  encoder = register_module("encoder", std::make_shared<DebertaEncoder>(cfg_));
}

ModelOutputs DebertaModel::run(const ModelInputs& in) {
  auto [h, real, mask] = deberta_inputs(in, *embeddings, cfg_, type_name());
  const int64_t s = h.size(1);
  at::Tensor rel_pos;
  if (cfg_.relative_attention) {
    const auto ids = at::arange(s, at::TensorOptions(at::kLong).device(h.device()));
    rel_pos = ids.unsqueeze(1) - ids.unsqueeze(0);
  }
  for (const auto& l : encoder->layer->items()) {
    auto block = [l, enc = encoder.get(), mask = mask, rel_pos](const at::Tensor& x) {
      return l->forward(x, mask, rel_pos, enc->rel_embeddings ? enc->rel_embeddings->weight : at::Tensor());
    };
    h = in.checkpoint_layers ? checkpointed(block, h) : block(h);
  }
  ModelOutputs out;
  out.last_hidden_state = h;
  return out;
}

std::shared_ptr<Model> make_deberta_classifier(const nlohmann::json& j, const std::string& where, int version,
                                               bool per_token) {
  if (version == 1)
    return std::make_shared<DebertaForClassification>(j, where, std::make_shared<DebertaModel>(j, where), "Deberta",
                                                      per_token);
  return std::make_shared<DebertaForClassification>(j, where, std::make_shared<DebertaV2Model>(j, where), "DebertaV2",
                                                    per_token);
}

}  // namespace peft
