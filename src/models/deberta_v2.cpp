#include "models/deberta_v2.h"

#include <ATen/ATen.h>

#include <cmath>

#include "models/attention.h"
#include "models/checkpoint.h"
#include "models/config_reader.h"
#include "models/model_config.h"

namespace peft {

namespace {

std::string lower(std::string s) {
  for (auto& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}

// pos_att_type: a list (["p2c", "c2p"]) or a "|"-separated string ("p2c|c2p"); transformers
// ignores other entries.
void read_pos_att_type(const ConfigReader& r, DebertaV2Config& c) {
  c.c2p = c.p2c = false;
  c.pos_att_count = 0;
  if (!r.has("pos_att_type")) return;
  const auto& v = r.json()["pos_att_type"];
  std::vector<std::string> types;
  if (v.is_string()) {
    const std::string s = lower(v.get<std::string>());
    for (size_t start = 0; start <= s.size();) {
      size_t bar = s.find('|', start);
      if (bar == std::string::npos) bar = s.size();
      std::string t = s.substr(start, bar - start);
      t.erase(0, t.find_first_not_of(" \t"));
      t.erase(t.find_last_not_of(" \t") + 1);
      types.push_back(t);
      start = bar + 1;
    }
  } else if (v.is_array()) {
    for (const auto& t : v) {
      if (!t.is_string()) r.fail("'pos_att_type' must be a list of strings or a \"p2c|c2p\" string");
      types.push_back(t.get<std::string>());
    }
  } else {
    r.fail("'pos_att_type' must be a list of strings or a \"p2c|c2p\" string");
  }
  for (const auto& t : types) {
    c.c2p = c.c2p || t == "c2p";
    c.p2c = c.p2c || t == "p2c";
  }
  c.pos_att_count = static_cast<int64_t>(types.size());
}

void read_relative_attention(const ConfigReader& r, DebertaV2Config& c) {
  c.relative_attention = r.get<bool>("relative_attention", false);
  c.share_att_key = r.get<bool>("share_att_key", false);
  c.norm_rel_embeddings = lower(r.get<std::string>("norm_rel_ebd", "none")).find("layer_norm") != std::string::npos;
  c.max_relative_positions = c.position_buckets = c.att_span = 0;
  if (!c.relative_attention) return;
  c.max_relative_positions = r.get<int64_t>("max_relative_positions", -1);
  if (c.max_relative_positions < 1) c.max_relative_positions = c.max_position_embeddings;
  if (c.max_relative_positions > ConfigLimits::kPositions)
    r.fail("'max_relative_positions' must be at most " + std::to_string(ConfigLimits::kPositions));
  c.position_buckets = r.get<int64_t>("position_buckets", -1);
  if (c.position_buckets > ConfigLimits::kPositions)
    r.fail("'position_buckets' must be at most " + std::to_string(ConfigLimits::kPositions));
  if (c.position_buckets > 0 && (c.position_buckets < 2 || c.max_relative_positions - 1 <= c.position_buckets / 2))
    r.fail("'position_buckets' must be between 2 and 2 * (max_relative_positions - 1) - 1, got " +
           std::to_string(c.position_buckets));
  c.att_span = c.position_buckets > 0 ? c.position_buckets : c.max_relative_positions;
}

}  // namespace

DebertaV2Config DebertaV2Config::from_json(const nlohmann::json& j, const std::string& where) {
  ConfigReader r(j, where);
  DebertaV2Config c;
  c.vocab_size = r.dim("vocab_size", 128100, ConfigLimits::kVocab);
  c.hidden_size = r.dim("hidden_size", 1536, ConfigLimits::kWidth);
  c.num_layers = r.dim("num_hidden_layers", 24, ConfigLimits::kLayers);
  c.num_heads = r.dim("num_attention_heads", 24, ConfigLimits::kHeads);
  if (c.hidden_size % c.num_heads != 0) r.fail("hidden_size is not a multiple of num_attention_heads");
  c.head_dim = r.dim("attention_head_size", c.hidden_size / c.num_heads, ConfigLimits::kWidth);
  if (c.num_heads * c.head_dim > ConfigLimits::kWidth) r.fail("num_attention_heads * attention_head_size is too large");
  c.intermediate_size = r.dim("intermediate_size", 6144, ConfigLimits::kWidth);
  c.max_position_embeddings = r.dim("max_position_embeddings", 512, ConfigLimits::kPositions);
  c.type_vocab_size = r.get<int64_t>("type_vocab_size", 0);
  if (c.type_vocab_size < 0 || c.type_vocab_size > ConfigLimits::kVocab)
    r.fail("'type_vocab_size' must be between 0 and " + std::to_string(ConfigLimits::kVocab));
  c.embedding_size = r.dim("embedding_size", c.hidden_size, ConfigLimits::kWidth);
  c.layer_norm_eps = r.positive("layer_norm_eps", 1e-7);
  c.hidden_act = r.get<std::string>("hidden_act", "gelu");
  c.pooler_hidden_act = r.get<std::string>("pooler_hidden_act", "gelu");
  c.conv_act = r.get<std::string>("conv_act", "tanh");
  for (const auto* act : {&c.hidden_act, &c.pooler_hidden_act, &c.conv_act}) check_activation(*act);
  c.position_biased_input = r.get<bool>("position_biased_input", true);
  read_pos_att_type(r, c);
  read_relative_attention(r, c);
  c.talking_head = r.get<bool>("talking_head", false);
  c.conv_kernel_size = r.get<int64_t>("conv_kernel_size", 0);
  c.conv_groups = r.get<int64_t>("conv_groups", 1);
  if (c.conv_kernel_size < 0 || c.conv_kernel_size > 4097 || (c.conv_kernel_size > 0 && c.conv_kernel_size % 2 == 0))
    r.fail("'conv_kernel_size' must be 0 or an odd number up to 4097, got " + std::to_string(c.conv_kernel_size));
  if (c.conv_groups < 1 || c.hidden_size % c.conv_groups != 0)
    r.fail("'conv_groups' must divide hidden_size, got " + std::to_string(c.conv_groups));
  return c;
}

at::Tensor deberta_relative_positions(int64_t s, const DebertaV2Config& c, at::Device device) {
  const auto ids = at::arange(s, at::TensorOptions(at::kLong).device(device));
  const at::Tensor rel = ids.unsqueeze(1) - ids.unsqueeze(0);
  if (c.position_buckets <= 0) return rel;
  // make_log_bucket_position, op for op in float32 so the buckets' edges fall where theirs do.
  const int64_t mid = c.position_buckets / 2;
  const auto sign = at::sign(rel);
  const auto abs_pos = at::where((rel < mid) & (rel > -mid), at::scalar_tensor(mid - 1, rel.options()), at::abs(rel));
  const auto log_base =
      at::log(at::scalar_tensor(static_cast<double>(c.max_relative_positions - 1) / static_cast<double>(mid), at::kFloat));
  const auto log_pos =
      at::ceil(at::log(abs_pos.to(at::kFloat) / static_cast<double>(mid)) / log_base * static_cast<double>(mid - 1)) +
      static_cast<double>(mid);
  return at::where(abs_pos <= mid, rel.to(at::kFloat), log_pos * sign).to(at::kLong);
}

DebertaV2Embeddings::DebertaV2Embeddings(const DebertaV2Config& c) {
  const int64_t e = c.embedding_size;
  word_embeddings = register_module("word_embeddings", std::make_shared<Embedding>(c.vocab_size, e));
  if (c.position_biased_input)
    position_embeddings =
        register_module("position_embeddings", std::make_shared<Embedding>(c.max_position_embeddings, e));
  if (c.type_vocab_size > 0)
    token_type_embeddings = register_module("token_type_embeddings", std::make_shared<Embedding>(c.type_vocab_size, e));
  if (e != c.hidden_size) embed_proj = register_module("embed_proj", std::make_shared<Linear>(e, c.hidden_size, false));
  LayerNorm_ = register_module("LayerNorm", std::make_shared<LayerNorm>(c.hidden_size, c.layer_norm_eps));
}

at::Tensor DebertaV2Embeddings::forward(const at::Tensor& ids, const at::Tensor& types, const at::Tensor& positions,
                                        const at::Tensor& inputs_embeds, const at::Tensor& mask) {
  at::Tensor e = inputs_embeds.defined() ? inputs_embeds : word_embeddings->forward(ids);
  if (position_embeddings) e = e + position_embeddings->forward(positions);
  if (token_type_embeddings) e = e + token_type_embeddings->forward(types);
  if (embed_proj) e = embed_proj->forward(e);
  e = LayerNorm_->forward(e);
  return e * mask.unsqueeze(-1).to(e.scalar_type());
}

DisentangledSelfAttention::DisentangledSelfAttention(const DebertaV2Config& c) : c_(c) {
  const int64_t all = c.num_heads * c.head_dim;
  query_proj = register_module("query_proj", std::make_shared<Linear>(c.hidden_size, all, true));
  key_proj = register_module("key_proj", std::make_shared<Linear>(c.hidden_size, all, true));
  value_proj = register_module("value_proj", std::make_shared<Linear>(c.hidden_size, all, true));
  if (c.relative_attention && !c.share_att_key) {
    if (c.c2p) pos_key_proj = register_module("pos_key_proj", std::make_shared<Linear>(c.hidden_size, all, true));
    if (c.p2c) pos_query_proj = register_module("pos_query_proj", std::make_shared<Linear>(c.hidden_size, all, true));
  }
}

at::Tensor DisentangledSelfAttention::relative_scores(const at::Tensor& q, const at::Tensor& k,
                                                      const at::Tensor& relative_pos, const at::Tensor& rel_embeddings,
                                                      double scale) {
  const int64_t span = c_.att_span, b = q.size(0), h = q.size(1), s = q.size(2);
  const auto rel = rel_embeddings.narrow(0, 0, 2 * span).unsqueeze(0);  // [1, 2 span, hidden]
  at::Tensor score;
  if (c_.c2p) {  // content -> position: q_i . pos_key[i - j]
    const auto pos_k = split_heads((c_.share_att_key ? key_proj : pos_key_proj)->forward(rel), h, c_.head_dim);
    const auto idx = at::clamp(relative_pos + span, 0, 2 * span - 1).expand({b, h, s, s});
    score = at::gather(at::matmul(q, pos_k.transpose(-1, -2)), -1, idx) / scale;
  }
  if (c_.p2c) {  // position -> content: k_j . pos_query[i - j], gathered by key then transposed
    const auto pos_q = split_heads((c_.share_att_key ? query_proj : pos_query_proj)->forward(rel), h, c_.head_dim);
    const auto idx = at::clamp(-relative_pos + span, 0, 2 * span - 1).expand({b, h, s, s});
    const auto p2c = at::gather(at::matmul(k, pos_q.transpose(-1, -2)), -1, idx).transpose(-1, -2) / scale;
    score = score.defined() ? score + p2c : p2c;
  }
  return score;
}

at::Tensor DisentangledSelfAttention::forward(const at::Tensor& hidden, const at::Tensor& mask,
                                              const at::Tensor& relative_pos, const at::Tensor& rel_embeddings) {
  const int64_t b = hidden.size(0), s = hidden.size(1);
  const auto q = split_heads(query_proj->forward(hidden), c_.num_heads, c_.head_dim);
  const auto k = split_heads(key_proj->forward(hidden), c_.num_heads, c_.head_dim);
  const auto v = split_heads(value_proj->forward(hidden), c_.num_heads, c_.head_dim);
  // transformers: sqrt(float32(head_dim) * scale_factor), dividing the keys before the product.
  const double scale = std::sqrt(static_cast<float>(c_.head_dim * c_.scale_factor()));
  at::Tensor scores = at::matmul(q, k.transpose(-1, -2) / scale);
  if (c_.relative_attention)
    if (auto rel = relative_scores(q, k, relative_pos, rel_embeddings, scale); rel.defined()) scores = scores + rel;
  // Masked scores are set (not added) to the dtype's lowest: a padding query sees every key alike.
  scores = scores.masked_fill(mask.logical_not(), dtype_lowest(scores.scalar_type()));
  const auto context = at::matmul(at::softmax(scores, -1), v);
  return context.transpose(1, 2).reshape({b, s, c_.num_heads * c_.head_dim});
}

DebertaV2Attention::DebertaV2Attention(const DebertaV2Config& c) {
  self = register_module("self", std::make_shared<DisentangledSelfAttention>(c));
  output = register_module("output", std::make_shared<BertDenseNorm>("DebertaV2SelfOutput", c.num_heads * c.head_dim,
                                                                     c.hidden_size, c.layer_norm_eps));
}

at::Tensor DebertaV2Attention::forward(const at::Tensor& h, const at::Tensor& mask, const at::Tensor& relative_pos,
                                       const at::Tensor& rel_embeddings) {
  return output->forward(self->forward(h, mask, relative_pos, rel_embeddings), h);
}

DebertaV2Intermediate::DebertaV2Intermediate(const DebertaV2Config& c) : act_(c.hidden_act) {
  dense = register_module("dense", std::make_shared<Linear>(c.hidden_size, c.intermediate_size, true));
}

at::Tensor DebertaV2Intermediate::forward(const at::Tensor& x) { return activation(act_, dense->forward(x)); }

DebertaV2Layer::DebertaV2Layer(const DebertaV2Config& c) {
  attention = register_module("attention", std::make_shared<DebertaV2Attention>(c));
  intermediate = register_module("intermediate", std::make_shared<DebertaV2Intermediate>(c));
  output = register_module(
      "output", std::make_shared<BertDenseNorm>("DebertaV2Output", c.intermediate_size, c.hidden_size, c.layer_norm_eps));
}

at::Tensor DebertaV2Layer::forward(const at::Tensor& h, const at::Tensor& mask, const at::Tensor& relative_pos,
                                   const at::Tensor& rel_embeddings) {
  const auto a = attention->forward(h, mask, relative_pos, rel_embeddings);
  return output->forward(intermediate->forward(a), a);
}

DebertaV2Conv1d::DebertaV2Conv1d(int64_t channels, int64_t kernel, int64_t groups) : kernel_(kernel), groups_(groups) {
  register_parameter("weight", &weight, {channels, channels / groups, kernel});
  register_parameter("bias", &bias, {channels});
}

at::Tensor DebertaV2Conv1d::forward(const at::Tensor& x) const {
  return at::conv1d(x.transpose(1, 2), weight, bias, {1}, {(kernel_ - 1) / 2}, {1}, groups_).transpose(1, 2);
}

DebertaV2ConvLayer::DebertaV2ConvLayer(const DebertaV2Config& c) : act_(c.conv_act) {
  conv = register_module("conv", std::make_shared<DebertaV2Conv1d>(c.hidden_size, c.conv_kernel_size, c.conv_groups));
  LayerNorm_ = register_module("LayerNorm", std::make_shared<LayerNorm>(c.hidden_size, c.layer_norm_eps));
}

at::Tensor DebertaV2ConvLayer::forward(const at::Tensor& embeddings, const at::Tensor& layer_out,
                                       const at::Tensor& real) {
  const auto keep = real.unsqueeze(-1);
  const auto out = activation(act_, conv->forward(embeddings).masked_fill(keep.logical_not(), 0));
  const auto y = LayerNorm_->forward(layer_out + out);
  return y * keep.to(y.scalar_type());
}

DebertaV2Encoder::DebertaV2Encoder(const DebertaV2Config& c) {
  layer = register_module("layer", std::make_shared<ModuleList<DebertaV2Layer>>());
  for (int64_t i = 0; i < c.num_layers; ++i) layer->push_back(std::make_shared<DebertaV2Layer>(c));
  if (c.relative_attention)
    rel_embeddings = register_module("rel_embeddings", std::make_shared<Embedding>(2 * c.att_span, c.hidden_size));
  if (c.norm_rel_embeddings)
    LayerNorm_ = register_module("LayerNorm", std::make_shared<LayerNorm>(c.hidden_size, c.layer_norm_eps));
  if (c.conv_kernel_size > 0) conv = register_module("conv", std::make_shared<DebertaV2ConvLayer>(c));
}

at::Tensor DebertaV2Encoder::relative_embeddings() {
  if (!rel_embeddings) return {};
  return LayerNorm_ ? LayerNorm_->forward(rel_embeddings->weight) : rel_embeddings->weight;
}

DebertaV2Model::DebertaV2Model(const nlohmann::json& j, const std::string& where)
    : DebertaBody(j), cfg_(DebertaV2Config::from_json(j, where)) {
  embeddings = register_module("embeddings", std::make_shared<DebertaV2Embeddings>(cfg_));
  encoder = register_module("encoder", std::make_shared<DebertaV2Encoder>(cfg_));
}

DebertaInputs deberta_inputs(const ModelInputs& in, DebertaV2Embeddings& embeddings, const DebertaV2Config& c,
                             const std::string& model) {
  if (in.cache) throw std::invalid_argument(model + " takes no key/value prefixes (prefix tuning)");
  const int64_t b = in.batch_size(), s = in.seq_len();
  const auto opts = at::TensorOptions(at::kLong).device(embeddings.word_embeddings->weight.device());
  if (in.attention_mask.defined() && (in.attention_mask.size(0) != b || in.attention_mask.size(1) != s))
    throw std::invalid_argument("attention_mask must have the shape of input_ids [" + std::to_string(b) + ", " +
                                std::to_string(s) + "], got " + c10::str(in.attention_mask.sizes()));
  at::Tensor types;
  if (c.type_vocab_size > 0) {
    types = in.token_type_ids.defined() ? in.token_type_ids : at::zeros({b, s}, opts);
    check_token_type_ids(types, b, s, c.type_vocab_size);
  }
  const auto pos = in.position_ids.defined() ? in.position_ids : at::arange(s, opts).unsqueeze(0).expand({b, s});
  DebertaInputs out;
  out.real = in.attention_mask.defined() ? in.attention_mask.ne(0) : at::ones({b, s}, opts.dtype(at::kBool));
  out.embeddings = embeddings.forward(in.input_ids, types, pos, in.inputs_embeds, out.real);
  out.mask = out.real.unsqueeze(1).unsqueeze(2) & out.real.unsqueeze(1).unsqueeze(3);
  return out;
}

ModelOutputs DebertaV2Model::run(const ModelInputs& in) {
  const auto [first, real, mask] = deberta_inputs(in, *embeddings, cfg_, type_name());
  const int64_t s = first.size(1);
  const auto rel_pos = cfg_.relative_attention ? deberta_relative_positions(s, cfg_, first.device()) : at::Tensor();
  at::Tensor h = first;
  const auto& layers = encoder->layer->items();
  for (size_t i = 0; i < layers.size(); ++i) {
    // The relative embeddings are computed inside the block, so a checkpointed block
    // recomputes them and their LayerNorm gets gradients too.
    auto block = [l = layers[i], enc = encoder.get(), mask = mask, rel_pos](const at::Tensor& x) {
      return l->forward(x, mask, rel_pos, enc->relative_embeddings());
    };
    h = in.checkpoint_layers ? checkpointed(block, h) : block(h);
    if (i == 0 && encoder->conv) h = encoder->conv->forward(first, h, real);
  }
  ModelOutputs out;
  out.last_hidden_state = h;
  return out;
}

DebertaV2ContextPooler::DebertaV2ContextPooler(const DebertaV2Config& c) : act_(c.pooler_hidden_act) {
  dense = register_module("dense", std::make_shared<Linear>(c.hidden_size, c.hidden_size, true));
}

at::Tensor DebertaV2ContextPooler::forward(const at::Tensor& h) { return activation(act_, dense->forward(h.select(1, 0))); }

DebertaForClassification::DebertaForClassification(const nlohmann::json& j, const std::string& where,
                                                   std::shared_ptr<DebertaBody> body, std::string family,
                                                   bool per_token)
    : Model(j), family_(std::move(family)), per_token_(per_token) {
  deberta = register_module("deberta", std::move(body));
  const DebertaV2Config& c = deberta->deberta_config();
  if (!per_token) {
    // transformers' pooler is pooler_hidden_size wide but reads the hidden states.
    const ConfigReader r(j, where);
    if (r.has("pooler_hidden_size") && r.get<int64_t>("pooler_hidden_size") != c.hidden_size)
      r.fail("'pooler_hidden_size' must equal hidden_size (" + std::to_string(c.hidden_size) + ")");
    pooler = register_module("pooler", std::make_shared<DebertaV2ContextPooler>(c));
  }
  classifier = register_module("classifier", std::make_shared<Linear>(c.hidden_size, num_labels_of(j, where), true));
}

std::vector<std::string> DebertaForClassification::head_parameter_names() const {
  if (per_token_) return {"classifier.weight", "classifier.bias"};
  return {"pooler.dense.weight", "pooler.dense.bias", "classifier.weight", "classifier.bias"};
}

ModelOutputs DebertaForClassification::run(const ModelInputs& in) {
  auto out = deberta->forward(in);
  out.logits = classifier->forward(per_token_ ? out.last_hidden_state : pooler->forward(out.last_hidden_state));
  return out;
}

}  // namespace peft
