#include "models/distilbert.h"

#include <ATen/ATen.h>

#include <cmath>

#include "models/attention.h"
#include "models/checkpoint.h"
#include "models/config_reader.h"
#include "models/model_config.h"

namespace peft {

namespace {
constexpr double kLayerNormEps = 1e-12;  // DistilBERT's LayerNorms; its config has no key
}  // namespace

DistilBertConfig DistilBertConfig::from_json(const nlohmann::json& j, const std::string& where) {
  ConfigReader r(j, where);
  DistilBertConfig c;
  c.vocab_size = r.dim("vocab_size", 30522, ConfigLimits::kVocab);
  c.max_position_embeddings = r.dim("max_position_embeddings", 512, ConfigLimits::kPositions);
  c.n_layers = r.dim("n_layers", 6, ConfigLimits::kLayers);
  c.n_heads = r.dim("n_heads", 12, ConfigLimits::kHeads);
  c.dim = r.dim("dim", 768, ConfigLimits::kWidth);
  c.hidden_dim = r.dim("hidden_dim", 3072, ConfigLimits::kWidth);
  c.activation = r.get<std::string>("activation", "gelu");
  check_activation(c.activation);
  if (c.dim % c.n_heads != 0) r.fail("dim is not a multiple of n_heads");
  return c;
}

DistilBertEmbeddings::DistilBertEmbeddings(const DistilBertConfig& c) {
  word_embeddings = register_module("word_embeddings", std::make_shared<Embedding>(c.vocab_size, c.dim));
  position_embeddings =
      register_module("position_embeddings", std::make_shared<Embedding>(c.max_position_embeddings, c.dim));
  LayerNorm_ = register_module("LayerNorm", std::make_shared<LayerNorm>(c.dim, kLayerNormEps));
}

at::Tensor DistilBertEmbeddings::forward(const at::Tensor& ids, const at::Tensor& positions,
                                         const at::Tensor& inputs_embeds) {
  auto e = (inputs_embeds.defined() ? inputs_embeds : word_embeddings->forward(ids)) +
           position_embeddings->forward(positions);
  return LayerNorm_->forward(e);
}

DistilBertSelfAttention::DistilBertSelfAttention(const DistilBertConfig& c)
    : heads_(c.n_heads), head_dim_(c.dim / c.n_heads) {
  q_lin = register_module("q_lin", std::make_shared<Linear>(c.dim, c.dim, true));
  k_lin = register_module("k_lin", std::make_shared<Linear>(c.dim, c.dim, true));
  v_lin = register_module("v_lin", std::make_shared<Linear>(c.dim, c.dim, true));
  out_lin = register_module("out_lin", std::make_shared<Linear>(c.dim, c.dim, true));
}

at::Tensor DistilBertSelfAttention::forward(const at::Tensor& h, const at::Tensor& mask) {
  auto q = split_heads(q_lin->forward(h), heads_, head_dim_);
  auto k = split_heads(k_lin->forward(h), heads_, head_dim_);
  auto v = split_heads(v_lin->forward(h), heads_, head_dim_);
  return out_lin->forward(attend(q, k, v, mask, 1.0 / std::sqrt(static_cast<double>(head_dim_))));
}

DistilBertFFN::DistilBertFFN(const DistilBertConfig& c) : act_(c.activation) {
  lin1 = register_module("lin1", std::make_shared<Linear>(c.dim, c.hidden_dim, true));
  lin2 = register_module("lin2", std::make_shared<Linear>(c.hidden_dim, c.dim, true));
}

at::Tensor DistilBertFFN::base_forward(const at::Tensor& x) { return lin2->forward(activation(act_, lin1->forward(x))); }

DistilBertBlock::DistilBertBlock(const DistilBertConfig& c) {
  attention = register_module("attention", std::make_shared<DistilBertSelfAttention>(c));
  sa_layer_norm = register_module("sa_layer_norm", std::make_shared<LayerNorm>(c.dim, kLayerNormEps));
  ffn = register_module("ffn", std::make_shared<DistilBertFFN>(c));
  output_layer_norm = register_module("output_layer_norm", std::make_shared<LayerNorm>(c.dim, kLayerNormEps));
}

at::Tensor DistilBertBlock::forward(const at::Tensor& h, const at::Tensor& mask) {
  auto a = sa_layer_norm->forward(attention->forward(h, mask) + h);
  return output_layer_norm->forward(ffn->forward(a) + a);
}

DistilBertTransformer::DistilBertTransformer(const DistilBertConfig& c) {
  layer = register_module("layer", std::make_shared<ModuleList<DistilBertBlock>>());
  for (int64_t i = 0; i < c.n_layers; ++i) layer->push_back(std::make_shared<DistilBertBlock>(c));
}

DistilBertModel::DistilBertModel(const nlohmann::json& j, const std::string& where)
    : Model(j), cfg_(DistilBertConfig::from_json(j, where)) {
  embeddings = register_module("embeddings", std::make_shared<DistilBertEmbeddings>(cfg_));
  transformer = register_module("transformer", std::make_shared<DistilBertTransformer>(cfg_));
}

ModelOutputs DistilBertModel::run(const ModelInputs& in) {
  if (in.cache) throw std::invalid_argument("DistilBertModel takes no key/value prefixes (prefix tuning)");
  const int64_t b = in.batch_size(), s = in.seq_len();
  auto opts = at::TensorOptions(at::kLong).device(embeddings->word_embeddings->weight.device());
  auto pos = in.position_ids.defined() ? in.position_ids : at::arange(s, opts).unsqueeze(0).expand({b, s});
  auto h = embeddings->forward(in.input_ids, pos, in.inputs_embeds);
  auto mask = make_attention_mask(in.attention_mask, b, s, s, /*causal=*/false, h.device());
  for (const auto& l : transformer->layer->items())
    h = in.checkpoint_layers ? checkpointed([l, mask](const at::Tensor& x) { return l->forward(x, mask); }, h)
                             : l->forward(h, mask);
  ModelOutputs out;
  out.last_hidden_state = h;
  return out;
}

DistilBertForSequenceClassification::DistilBertForSequenceClassification(const nlohmann::json& j,
                                                                         const std::string& where)
    : Model(j) {
  distilbert = register_module("distilbert", std::make_shared<DistilBertModel>(j, where));
  const int64_t dim = distilbert->embeddings->word_embeddings->embedding_dim;
  pre_classifier = register_module("pre_classifier", std::make_shared<Linear>(dim, dim, true));
  classifier = register_module("classifier", std::make_shared<Linear>(dim, num_labels_of(j, where), true));
}

ModelOutputs DistilBertForSequenceClassification::run(const ModelInputs& in) {
  auto out = distilbert->forward(in);
  const auto first = out.last_hidden_state.select(1, 0);  // the [CLS] token
  out.logits = classifier->forward(at::relu(pre_classifier->forward(first)));
  return out;
}

}  // namespace peft
