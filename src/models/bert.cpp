#include "models/bert.h"

#include <ATen/ATen.h>

#include <cmath>

#include "models/checkpoint.h"
#include "models/config_reader.h"

namespace peft {



void check_token_type_ids(const at::Tensor& t, int64_t b, int64_t s, int64_t type_vocab_size) {
  if (t.dim() != 2 || t.size(0) != b || t.size(1) != s)
    throw std::invalid_argument("token_type_ids must have the shape of input_ids [" + std::to_string(b) + ", " +
                                std::to_string(s) + "], got " + c10::str(t.sizes()));
  if (t.numel() > 0 && (t.min().item<int64_t>() < 0 || t.max().item<int64_t>() >= type_vocab_size))
    throw std::invalid_argument("token_type_ids must lie in [0, " + std::to_string(type_vocab_size) + ")");
}

BertEmbeddings::BertEmbeddings(const BertConfig& c) {
  word_embeddings = register_module("word_embeddings", std::make_shared<Embedding>(c.vocab_size, c.hidden_size));
  position_embeddings =
      register_module("position_embeddings", std::make_shared<Embedding>(c.max_position_embeddings, c.hidden_size));
  token_type_embeddings =
      register_module("token_type_embeddings", std::make_shared<Embedding>(c.type_vocab_size, c.hidden_size));
  LayerNorm_ = register_module("LayerNorm", std::make_shared<LayerNorm>(c.hidden_size, c.layer_norm_eps));
}

at::Tensor BertEmbeddings::forward(const at::Tensor& ids, const at::Tensor& types, const at::Tensor& pos,
                                   const at::Tensor& inputs_embeds) {
  auto e = (inputs_embeds.defined() ? inputs_embeds : word_embeddings->forward(ids)) + token_type_embeddings->forward(types) + position_embeddings->forward(pos);
  return LayerNorm_->forward(e);
}

BertSelfAttention::BertSelfAttention(const BertConfig& c)
    : heads_(c.num_heads), head_dim_(c.hidden_size / c.num_heads) {
  query = register_module("query", std::make_shared<Linear>(c.hidden_size, c.hidden_size, true));
  key = register_module("key", std::make_shared<Linear>(c.hidden_size, c.hidden_size, true));
  value = register_module("value", std::make_shared<Linear>(c.hidden_size, c.hidden_size, true));
}

at::Tensor BertSelfAttention::forward(const at::Tensor& h, const at::Tensor& mask, const KVCache* prefix,
                                     size_t layer) {
  auto q = split_heads(query->forward(h), heads_, head_dim_);
  auto k = split_heads(key->forward(h), heads_, head_dim_);
  auto v = split_heads(value->forward(h), heads_, head_dim_);
  if (prefix && prefix->length() > 0) {
    k = at::cat({prefix->keys[layer].to(k.scalar_type()), k}, 2);
    v = at::cat({prefix->values[layer].to(v.scalar_type()), v}, 2);
  }
  return attend(q, k, v, mask, 1.0 / std::sqrt(static_cast<double>(head_dim_)));
}

BertDenseNorm::BertDenseNorm(std::string type, int64_t in, int64_t out, double eps) : type_(std::move(type)) {
  dense = register_module("dense", std::make_shared<Linear>(in, out, true));
  LayerNorm_ = register_module("LayerNorm", std::make_shared<LayerNorm>(out, eps));
}

at::Tensor BertDenseNorm::forward(const at::Tensor& x, const at::Tensor& residual) {
  return LayerNorm_->forward(dense->forward(x) + residual);
}

BertAttention::BertAttention(const BertConfig& c) {
  self = register_module("self", std::make_shared<BertSelfAttention>(c));
  output = register_module("output",
                           std::make_shared<BertDenseNorm>("BertSelfOutput", c.hidden_size, c.hidden_size, c.layer_norm_eps));
}

at::Tensor BertAttention::forward(const at::Tensor& h, const at::Tensor& mask, const KVCache* prefix, size_t layer) {
  return output->forward(self->forward(h, mask, prefix, layer), h);
}

BertIntermediate::BertIntermediate(const BertConfig& c) : act_(c.hidden_act) {
  dense = register_module("dense", std::make_shared<Linear>(c.hidden_size, c.intermediate_size, true));
}

at::Tensor BertIntermediate::forward(const at::Tensor& x) { return activation(act_, dense->forward(x)); }

BertLayer::BertLayer(const BertConfig& c) {
  attention = register_module("attention", std::make_shared<BertAttention>(c));
  intermediate = register_module("intermediate", std::make_shared<BertIntermediate>(c));
  output = register_module(
      "output", std::make_shared<BertDenseNorm>("BertOutput", c.intermediate_size, c.hidden_size, c.layer_norm_eps));
}

at::Tensor BertLayer::forward(const at::Tensor& h, const at::Tensor& mask, const KVCache* prefix, size_t layer) {
  auto a = attention->forward(h, mask, prefix, layer);
  return output->forward(intermediate->forward(a), a);
}

BertEncoder::BertEncoder(const BertConfig& c) {
  layer = register_module("layer", std::make_shared<ModuleList<BertLayer>>());
  for (int64_t i = 0; i < c.num_layers; ++i) layer->push_back(std::make_shared<BertLayer>(c));
}

BertPooler::BertPooler(int64_t hidden) {
  dense = register_module("dense", std::make_shared<Linear>(hidden, hidden, true));
}

at::Tensor BertPooler::forward(const at::Tensor& h) { return at::tanh(dense->forward(h.select(1, 0))); }

BertModel::BertModel(const nlohmann::json& j, const std::string& where, bool add_pooling_layer,
                     int64_t embedding_size)
    : Model(j), cfg_(BertConfig::from_json(j, where)) {
  BertConfig narrow = cfg_;
  if (embedding_size > 0) narrow.hidden_size = embedding_size;
  embeddings = register_module("embeddings", std::make_shared<BertEmbeddings>(narrow));
  if (narrow.hidden_size != cfg_.hidden_size)
    embeddings_project = register_module("embeddings_project",
                                         std::make_shared<Linear>(narrow.hidden_size, cfg_.hidden_size, true));
  encoder = register_module("encoder", std::make_shared<BertEncoder>(cfg_));
  if (add_pooling_layer) pooler = register_module("pooler", std::make_shared<BertPooler>(cfg_.hidden_size));
}

at::Tensor BertModel::default_positions(const ModelInputs& in, int64_t past, const at::TensorOptions& opts) const {
  const int64_t b = in.batch_size(), s = in.seq_len();
  if (!cfg_.padding_aware_positions) return at::arange(past, past + s, opts).unsqueeze(0).expand({b, s});
  const int64_t pad = cfg_.pad_token_id;
  if (!in.input_ids.defined())  // embeddings in: every position is real
    return at::arange(pad + 1, pad + 1 + s, opts).unsqueeze(0).expand({b, s});
  const at::Tensor real = in.input_ids.ne(pad).to(at::kLong);
  return (at::cumsum(real, 1) + past) * real + pad;
}

ModelOutputs BertModel::run(const ModelInputs& in) {
  const int64_t b = in.batch_size(), s = in.seq_len();
  // A cache given to an encoder holds key/value prefixes (prefix tuning): every layer
  // attends to them too, and positions count on after them, as transformers does.
  const KVCache* prefix = in.cache && in.cache->length() > 0 ? in.cache : nullptr;
  const int64_t past = prefix ? prefix->length() : 0;
  auto opts = at::TensorOptions(at::kLong).device(embeddings->word_embeddings->weight.device());
  auto pos = in.position_ids.defined() ? in.position_ids : default_positions(in, past, opts);
  if (in.token_type_ids.defined()) check_token_type_ids(in.token_type_ids, b, s, cfg_.type_vocab_size);
  auto types = in.token_type_ids.defined() ? in.token_type_ids : at::zeros({b, s}, opts);
  auto h = embeddings->forward(in.input_ids, types, pos, in.inputs_embeds);
  if (embeddings_project) h = embeddings_project->forward(h);
  auto mask = make_attention_mask(in.attention_mask, b, s, past + s, /*causal=*/false, h.device());
  const auto& layers = encoder->layer->items();
  for (size_t i = 0; i < layers.size(); ++i) {
    const auto& l = layers[i];
    h = in.checkpoint_layers
            ? checkpointed([l, mask, prefix, i](const at::Tensor& x) { return l->forward(x, mask, prefix, i); }, h)
            : l->forward(h, mask, prefix, i);
  }
  ModelOutputs out;
  out.last_hidden_state = h;
  if (pooler) out.pooler_output = pooler->forward(h);
  return out;
}

ElectraForSequenceClassification::ElectraForSequenceClassification(const nlohmann::json& j, const std::string& where)
    : Model(j) {
  electra = register_module("electra", std::make_shared<ElectraModel>(j, where));
  const int64_t hidden = electra->hidden_size();
  classifier = register_module("classifier", std::make_shared<RobertaClassificationHead>(
                                                 hidden, num_labels_of(j, where), "ElectraClassificationHead", "gelu"));
}

ModelOutputs ElectraForSequenceClassification::run(const ModelInputs& in) {
  auto out = electra->forward(in);
  out.logits = classifier->forward(out.last_hidden_state);
  return out;
}

BertForSequenceClassification::BertForSequenceClassification(const nlohmann::json& j, const std::string& where)
    : Model(j) {
  bert = register_module("bert", std::make_shared<BertModel>(j, where, true));
  const int64_t hidden = bert->hidden_size();
  classifier = register_module("classifier", std::make_shared<Linear>(hidden, num_labels_of(j, where), true));
}

ModelOutputs BertForSequenceClassification::run(const ModelInputs& in) {
  auto out = bert->forward(in);
  out.logits = classifier->forward(out.pooler_output);
  return out;
}

ElectraModel::ElectraModel(const nlohmann::json& j, const std::string& where)
    : BertModel(j, where, /*add_pooling_layer=*/false,
                ConfigReader(j, where).dim("embedding_size", 128, ConfigLimits::kWidth)) {}

RobertaClassificationHead::RobertaClassificationHead(int64_t hidden, int64_t labels, std::string type,
                                                     std::string activation)
    : type_(std::move(type)), act_(std::move(activation)) {
  dense = register_module("dense", std::make_shared<Linear>(hidden, hidden, true));
  out_proj = register_module("out_proj", std::make_shared<Linear>(hidden, labels, true));
}

at::Tensor RobertaClassificationHead::forward(const at::Tensor& h) {
  return out_proj->forward(activation(act_, dense->forward(h.select(1, 0))));
}

RobertaForSequenceClassification::RobertaForSequenceClassification(const nlohmann::json& j, const std::string& where)
    : Model(j) {
  roberta = register_module("roberta", std::make_shared<RobertaModel>(j, where, /*add_pooling_layer=*/false));
  const int64_t hidden = roberta->hidden_size();
  classifier = register_module("classifier", std::make_shared<RobertaClassificationHead>(hidden, num_labels_of(j, where)));
}

ModelOutputs RobertaForSequenceClassification::run(const ModelInputs& in) {
  auto out = roberta->forward(in);
  out.logits = classifier->forward(out.last_hidden_state);
  return out;
}

BertForTokenClassification::BertForTokenClassification(const nlohmann::json& j, const std::string& family,
                                                       const std::string& where)
    : Model(j), family_(family) {
  if (family == "Roberta")
    encoder = register_module("roberta", std::make_shared<RobertaModel>(j, where, /*add_pooling_layer=*/false));
  else if (family == "Electra")
    encoder = register_module("electra", std::make_shared<ElectraModel>(j, where));
  else
    encoder = register_module("bert", std::make_shared<BertModel>(j, where, /*add_pooling_layer=*/false));
  const int64_t hidden = encoder->hidden_size();
  classifier = register_module("classifier", std::make_shared<Linear>(hidden, num_labels_of(j, where), true));
}

ModelOutputs BertForTokenClassification::run(const ModelInputs& in) {
  auto out = encoder->forward(in);
  out.logits = classifier->forward(out.last_hidden_state);
  return out;
}

}  // namespace peft
