#include "models/modernbert.h"

#include <ATen/ATen.h>

#include "models/checkpoint.h"
#include "models/config_reader.h"
#include "models/model_config.h"

namespace peft {

namespace {

// rope_parameters per layer type (transformers 5); older configs say global_rope_theta,
// local_rope_theta and one rope_scaling for both.
nlohmann::json read_rope(const ConfigReader& r, const char* type, const char* theta_key, double theta) {
  const auto& j = r.json();
  const auto& rp = r.has("rope_parameters") ? j["rope_parameters"] : nlohmann::json::object();
  if (!rp.is_object()) r.fail("'rope_parameters' must be an object");
  nlohmann::json p = {{"rope_type", "default"}};
  if (rp.contains(type)) {
    if (!rp[type].is_object()) r.fail(std::string("'rope_parameters.") + type + "' must be an object");
    p = rp[type];
  } else if (r.has("rope_scaling")) {
    if (!j["rope_scaling"].is_object()) r.fail("'rope_scaling' must be an object");
    p.update(j["rope_scaling"]);
  }
  if (!p.contains("rope_theta")) p["rope_theta"] = r.positive(theta_key, theta);
  return p;
}

RotaryEmbedding make_rope(const nlohmann::json& rope, const ModernBertConfig& c, const std::string& where) {
  try {
    return RotaryEmbedding(rope, c.head_dim, c.max_position_embeddings);
  } catch (const std::exception& e) {
    throw std::runtime_error(where + ": rope_parameters: " + e.what());
  }
}

// Opens rows with no visible key (a padding query far from every real token) so SDPA
// yields finite values there; those outputs are padding and never read.
at::Tensor open_empty_rows(const at::Tensor& visible) { return visible | visible.any(-1, true).logical_not(); }

}  // namespace

ModernBertConfig ModernBertConfig::from_json(const nlohmann::json& j, const std::string& where) {
  ConfigReader r(j, where);
  ModernBertConfig c;
  c.vocab_size = r.dim("vocab_size", 50368, ConfigLimits::kVocab);
  c.hidden_size = r.dim("hidden_size", 768, ConfigLimits::kWidth);
  c.intermediate_size = r.dim("intermediate_size", 1152, ConfigLimits::kWidth);
  c.num_layers = r.dim("num_hidden_layers", 22, ConfigLimits::kLayers);
  c.num_heads = r.dim("num_attention_heads", 12, ConfigLimits::kHeads);
  if (c.hidden_size % c.num_heads != 0) r.fail("hidden_size is not a multiple of num_attention_heads");
  c.head_dim = c.hidden_size / c.num_heads;
  if (c.head_dim % 2 != 0) r.fail("hidden_size / num_attention_heads must be even (rotary pairs)");
  c.max_position_embeddings = r.dim("max_position_embeddings", 8192, ConfigLimits::kPositions);
  c.norm_eps = r.positive("norm_eps", 1e-5);
  c.norm_bias = r.get<bool>("norm_bias", false);
  c.attention_bias = r.get<bool>("attention_bias", false);
  c.mlp_bias = r.get<bool>("mlp_bias", false);
  c.classifier_bias = r.get<bool>("classifier_bias", false);
  c.hidden_activation = r.get<std::string>("hidden_activation", "gelu");
  c.classifier_activation = r.get<std::string>("classifier_activation", "gelu");
  for (const auto* act : {&c.hidden_activation, &c.classifier_activation}) check_activation(*act);
  const std::string pooling = r.get<std::string>("classifier_pooling", "cls");
  if (pooling != "cls" && pooling != "mean")
    r.fail("'classifier_pooling' must be \"cls\" or \"mean\", got \"" + pooling + "\"");
  c.mean_pooling = pooling == "mean";
  // transformers' sliding_window is local_attention // 2: the keys each side a local query sees.
  c.window = r.dim("local_attention", 128, ConfigLimits::kPositions) / 2;
  // layer_types, else every global_attn_every_n_layers-th layer global (ModernBertConfig's rule).
  const int64_t every = r.dim("global_attn_every_n_layers", 3, ConfigLimits::kLayers);
  c.local = read_sliding_layers(r, c.num_layers, [every](int64_t i) { return i % every != 0; });
  c.rope_global = read_rope(r, "full_attention", "global_rope_theta", 160000.0);
  c.rope_local = read_rope(r, "sliding_attention", "local_rope_theta", 10000.0);
  return c;
}

ModernBertEmbeddings::ModernBertEmbeddings(const ModernBertConfig& c) {
  tok_embeddings = register_module("tok_embeddings", std::make_shared<Embedding>(c.vocab_size, c.hidden_size));
  norm = register_module("norm", std::make_shared<LayerNorm>(c.hidden_size, c.norm_eps, c.norm_bias));
}

at::Tensor ModernBertEmbeddings::forward(const at::Tensor& ids, const at::Tensor& inputs_embeds) {
  return norm->forward(inputs_embeds.defined() ? inputs_embeds : tok_embeddings->forward(ids));
}

ModernBertAttention::ModernBertAttention(const ModernBertConfig& c) : heads_(c.num_heads), head_dim_(c.head_dim) {
  Wqkv = register_module("Wqkv", std::make_shared<Linear>(c.hidden_size, 3 * c.hidden_size, c.attention_bias));
  Wo = register_module("Wo", std::make_shared<Linear>(c.hidden_size, c.hidden_size, c.attention_bias));
}

at::Tensor ModernBertAttention::forward(const at::Tensor& h, const RotaryEmbedding::Angles& rope,
                                        const at::Tensor& mask) {
  const int64_t b = h.size(0), s = h.size(1);
  // Wqkv's output is [q | k | v], each heads x head_dim.
  const auto qkv = Wqkv->forward(h).view({b, s, 3, heads_, head_dim_}).permute({2, 0, 3, 1, 4});
  at::Tensor q = qkv[0], k = qkv[1];
  RotaryEmbedding::apply(q, k, rope);
  return Wo->forward(attend(q, k, qkv[2], mask, 1.0 / std::sqrt(static_cast<double>(head_dim_))));
}

ModernBertMLP::ModernBertMLP(const ModernBertConfig& c) : act_(c.hidden_activation) {
  Wi = register_module("Wi", std::make_shared<Linear>(c.hidden_size, 2 * c.intermediate_size, c.mlp_bias));
  Wo = register_module("Wo", std::make_shared<Linear>(c.intermediate_size, c.hidden_size, c.mlp_bias));
}

at::Tensor ModernBertMLP::forward(const at::Tensor& x) {
  const auto parts = Wi->forward(x).chunk(2, -1);
  return Wo->forward(activation(act_, parts[0]) * parts[1]);
}

ModernBertEncoderLayer::ModernBertEncoderLayer(const ModernBertConfig& c, int64_t index)
    : local_(c.local[static_cast<size_t>(index)]) {
  if (index > 0) attn_norm = register_module("attn_norm", std::make_shared<LayerNorm>(c.hidden_size, c.norm_eps, c.norm_bias));
  attn = register_module("attn", std::make_shared<ModernBertAttention>(c));
  mlp_norm = register_module("mlp_norm", std::make_shared<LayerNorm>(c.hidden_size, c.norm_eps, c.norm_bias));
  mlp = register_module("mlp", std::make_shared<ModernBertMLP>(c));
}

at::Tensor ModernBertEncoderLayer::forward(const at::Tensor& h, const RotaryEmbedding::Angles& rope,
                                           const at::Tensor& mask) {
  const auto a = h + attn->forward(attn_norm ? attn_norm->forward(h) : h, rope, mask);
  return a + mlp->forward(mlp_norm->forward(a));
}

ModernBertModel::ModernBertModel(const nlohmann::json& j, const std::string& where)
    : Model(j),
      cfg_(ModernBertConfig::from_json(j, where)),
      rope_global_(make_rope(cfg_.rope_global, cfg_, where)),
      rope_local_(make_rope(cfg_.rope_local, cfg_, where)) {
  embeddings = register_module("embeddings", std::make_shared<ModernBertEmbeddings>(cfg_));
  layers = register_module("layers", std::make_shared<ModuleList<ModernBertEncoderLayer>>());
  for (int64_t i = 0; i < cfg_.num_layers; ++i) layers->push_back(std::make_shared<ModernBertEncoderLayer>(cfg_, i));
  final_norm = register_module("final_norm", std::make_shared<LayerNorm>(cfg_.hidden_size, cfg_.norm_eps, cfg_.norm_bias));
}

ModelOutputs ModernBertModel::run(const ModelInputs& in) {
  if (in.cache) throw std::invalid_argument(type_name() + " takes no key/value prefixes (prefix tuning)");
  const int64_t b = in.batch_size(), s = in.seq_len();
  if (in.attention_mask.defined() && (in.attention_mask.size(0) != b || in.attention_mask.size(1) != s))
    throw std::invalid_argument("attention_mask must have the shape of input_ids [" + std::to_string(b) + ", " +
                                std::to_string(s) + "], got " + c10::str(in.attention_mask.sizes()));
  at::Tensor h = embeddings->forward(in.input_ids, in.inputs_embeds);
  const auto opts = at::TensorOptions(at::kLong).device(h.device());
  const auto pos = in.position_ids.defined() ? in.position_ids : at::arange(s, opts).unsqueeze(0).expand({b, s});
  const auto global = rope_global_.angles(pos, h.scalar_type(), h.device());
  const auto local = rope_local_.angles(pos, h.scalar_type(), h.device());
  // Keys on padding are hidden from every query; a local query sees keys within the window
  // by index (transformers' bidirectional sliding-window mask, |i - j| <= window).
  const auto real = in.attention_mask.defined() ? in.attention_mask.ne(0) : at::ones({b, s}, opts.dtype(at::kBool));
  const auto keys = real.view({b, 1, 1, s}).expand({b, 1, s, s});
  const auto idx = at::arange(s, opts);
  const auto band = (idx.unsqueeze(1) - idx.unsqueeze(0)).abs() <= cfg_.window;
  const auto full_mask = open_empty_rows(keys), local_mask = open_empty_rows(keys & band);
  for (const auto& layer : layers->items()) {
    const auto& mask = layer->local() ? local_mask : full_mask;
    const auto& angles = layer->local() ? local : global;
    auto block = [l = layer.get(), angles, mask](const at::Tensor& x) { return l->forward(x, angles, mask); };
    h = in.checkpoint_layers ? checkpointed(block, h) : block(h);
  }
  ModelOutputs out;
  out.last_hidden_state = final_norm->forward(h);
  return out;
}

ModernBertPredictionHead::ModernBertPredictionHead(const ModernBertConfig& c) : act_(c.classifier_activation) {
  dense = register_module("dense", std::make_shared<Linear>(c.hidden_size, c.hidden_size, c.classifier_bias));
  norm = register_module("norm", std::make_shared<LayerNorm>(c.hidden_size, c.norm_eps, c.norm_bias));
}

at::Tensor ModernBertPredictionHead::forward(const at::Tensor& x) { return norm->forward(activation(act_, dense->forward(x))); }

ModernBertForClassification::ModernBertForClassification(const nlohmann::json& j, const std::string& where,
                                                         bool per_token)
    : Model(j), per_token_(per_token) {
  model = register_module("model", std::make_shared<ModernBertModel>(j, where));
  const auto& c = model->modernbert_config();
  head = register_module("head", std::make_shared<ModernBertPredictionHead>(c));
  classifier = register_module("classifier", std::make_shared<Linear>(c.hidden_size, num_labels_of(j, where), true));
}

std::vector<std::string> ModernBertForClassification::head_parameter_names() const {
  std::vector<std::string> names = {"head.dense.weight", "head.norm.weight", "classifier.weight", "classifier.bias"};
  if (head->dense->bias.defined()) names.push_back("head.dense.bias");
  if (head->norm->bias.defined()) names.push_back("head.norm.bias");
  return names;
}

ModelOutputs ModernBertForClassification::run(const ModelInputs& in) {
  auto out = model->forward(in);
  const at::Tensor& h = out.last_hidden_state;
  at::Tensor x = h;
  if (!per_token_ && model->modernbert_config().mean_pooling) {
    const auto m = in.attention_mask.defined() ? in.attention_mask.to(h.scalar_type())
                                               : at::ones({h.size(0), h.size(1)}, h.options());
    x = (h * m.unsqueeze(-1)).sum(1) / m.sum(1, true);
  } else if (!per_token_) {
    x = h.select(1, 0);
  }
  out.logits = classifier->forward(head->forward(x));
  return out;
}

}  // namespace peft
