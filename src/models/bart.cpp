#include "models/bart.h"

#include <ATen/ATen.h>

#include <cmath>
#include <functional>
#include <stdexcept>

#include "models/attention.h"
#include "models/checkpoint.h"
#include "models/config_reader.h"
#include "models/model_config.h"

namespace peft {

namespace {

constexpr int64_t kPositionOffset = 2;  // BartLearnedPositionalEmbedding's rows 0 and 1 are never used
constexpr double kLayerNormEps = 1e-5;  // nn.LayerNorm's default

std::shared_ptr<Seq2SeqAttention> attention(const BartConfig& c, int64_t heads) {
  return std::make_shared<Seq2SeqAttention>(c.d_model, heads, Seq2SeqAttention::Options{c.arch + "Attention"});
}

double embed_scale(const BartConfig& c) {
  return c.scale_embedding ? std::sqrt(static_cast<double>(c.d_model)) : 1.0;
}
// Token rows times the embedding scale (no multiply at 1, as transformers' result is the same).
at::Tensor scaled(const at::Tensor& rows, double scale) { return scale == 1.0 ? rows : rows * scale; }

// BART's, mBART's and M2M100's embedding scales its own rows; Marian's and Pegasus's is a
// plain nn.Embedding that the stacks scale.
std::shared_ptr<Embedding> token_embedding(const BartConfig& c) {
  if (c.stacks_scale_tokens) return std::make_shared<Embedding>(c.vocab_size, c.d_model);
  return std::make_shared<BartScaledWordEmbedding>(c.vocab_size, c.d_model, embed_scale(c), c.arch);
}
double stack_scale(const BartConfig& c) { return c.stacks_scale_tokens ? embed_scale(c) : 1.0; }

// mBART's pre-norm residual block, x + f(norm(x)), or BART's post-norm one, norm(x + f(x)).
at::Tensor residual(bool pre_norm, LayerNorm& norm, const at::Tensor& x, const std::function<at::Tensor(const at::Tensor&)>& f) {
  return pre_norm ? x + f(norm.forward(x)) : norm.forward(x + f(x));
}

// [b, 1, q, k] boolean: keys on the encoder's padding hidden; undefined when all are real.
at::Tensor padding_mask(const at::Tensor& mask, int64_t b, int64_t q, int64_t k, at::Device device) {
  if (!mask.defined()) return {};
  return make_attention_mask(mask.to(device), b, q, k, /*causal=*/false, device);
}

std::shared_ptr<Embedding> learned_positions(const BartConfig& c) {
  return std::make_shared<Embedding>(c.max_position_embeddings + kPositionOffset, c.d_model);
}
std::shared_ptr<SinusoidalPositions> sinusoids(const BartConfig& c) {
  if (c.positions == BartConfig::Positions::kFairseq)
    return std::make_shared<FairseqSinusoids>(c.d_model, c.pad_token_id, c.arch);
  return std::make_shared<SinusoidTable>(c.max_position_embeddings, c.d_model, c.arch);
}

// What each architecture fixes (its layout) and the defaults of its config class.
struct ArchTraits {
  bool pre_norm;
  BartConfig::Positions positions;
  bool layernorm_embedding, logits_bias, stacks_scale_tokens;
  int64_t vocab_size, pad_token_id, decoder_start_token_id;  // mBART's start is its bos_token_id
  const char* activation;
  bool scale_embedding;
};
ArchTraits traits_of(const std::string& arch) {
  using P = BartConfig::Positions;
  if (arch == "MBart") return {true, P::kLearned, true, true, false, 50265, 1, 2, "gelu", false};
  if (arch == "M2M100") return {true, P::kFairseq, false, false, false, 128112, 1, 2, "relu", true};
  if (arch == "Marian") return {false, P::kSinusoidTable, false, true, true, 58101, 58100, 58100, "gelu", false};
  if (arch == "Pegasus") return {true, P::kSinusoidTable, false, true, true, 50265, 0, 0, "gelu", false};
  return {false, P::kLearned, true, true, false, 50265, 1, 2, "gelu", false};  // BART
}

// The most values a Marian or Pegasus sinusoid table may hold (transformers makes the whole
// table at load; 64M is 256 MiB of float32, and released models use 1M).
constexpr int64_t kMaxTableValues = int64_t{1} << 26;

// [b, t, d] or [t, d] position vectors for positions past..past+t-1 (`ids`: the tokens
// there, which M2M100 counts its positions over), in `dtype` (M2M100's float32 sinusoids
// rounded to it, as transformers' buffer is).
at::Tensor positions(Embedding* learned, SinusoidalPositions* sinusoidal, const at::Tensor& ids, int64_t b, int64_t t,
                     int64_t past, at::Device device, at::ScalarType dtype) {
  if (sinusoidal) return sinusoidal->forward(ids, b, t, past, device).to(dtype);
  return learned->forward(at::arange(past, past + t, at::TensorOptions(at::kLong).device(device)) + kPositionOffset);
}

// The same at given positions [b, t] (Seq2SeqInputs::decoder_position_ids).
at::Tensor positions_at(Embedding* learned, SinusoidalPositions* sinusoidal, const at::Tensor& ids,
                        const at::Tensor& position_ids, at::Device device, at::ScalarType dtype) {
  if (sinusoidal) return sinusoidal->at_positions(ids, position_ids, device).to(dtype);
  return learned->forward(position_ids.to(device) + kPositionOffset);
}

}  // namespace

BartConfig BartConfig::from_json(const nlohmann::json& j, const std::string& where, const std::string& arch) {
  ConfigReader r(j, where);
  BartConfig c;
  c.arch = arch;
  const ArchTraits d = traits_of(arch);
  c.pre_norm = d.pre_norm;
  c.positions = d.positions;
  c.layernorm_embedding = d.layernorm_embedding;
  c.logits_bias = d.logits_bias;
  c.stacks_scale_tokens = d.stacks_scale_tokens;
  const bool m2m = c.positions == BartConfig::Positions::kFairseq;
  const bool table = c.positions == BartConfig::Positions::kSinusoidTable;
  // Marian without shared embeddings has separate encoder and decoder vocabularies.
  if (arch == "Marian" && !r.get<bool>("share_encoder_decoder_embeddings", true))
    r.fail("share_encoder_decoder_embeddings false (separate source and target vocabularies) is not supported");
  c.vocab_size = r.dim("vocab_size", d.vocab_size, ConfigLimits::kVocab);
  c.d_model = r.dim("d_model", 1024, ConfigLimits::kWidth);
  c.encoder_layers = r.dim("encoder_layers", 12, ConfigLimits::kLayers);
  c.decoder_layers = r.dim("decoder_layers", 12, ConfigLimits::kLayers);
  c.encoder_ffn_dim = r.dim("encoder_ffn_dim", 4096, ConfigLimits::kWidth);
  c.decoder_ffn_dim = r.dim("decoder_ffn_dim", 4096, ConfigLimits::kWidth);
  c.encoder_attention_heads = r.dim("encoder_attention_heads", 16, ConfigLimits::kHeads);
  c.decoder_attention_heads = r.dim("decoder_attention_heads", 16, ConfigLimits::kHeads);
  for (const char* key : {"encoder_attention_heads", "decoder_attention_heads"})
    if (c.d_model % r.get<int64_t>(key, 16) != 0) r.fail(std::string("d_model is not a multiple of ") + key);
  c.max_position_embeddings = r.dim("max_position_embeddings", 1024, ConfigLimits::kPositions);
  c.activation_function = r.get<std::string>("activation_function", d.activation);
  check_activation(c.activation_function);
  c.scale_embedding = r.get<bool>("scale_embedding", d.scale_embedding);
  if (m2m && c.d_model < 4) r.fail("d_model must be at least 4 for sinusoidal positions (half of it, less one, divides)");
  if (table && c.max_position_embeddings > kMaxTableValues / c.d_model)
    r.fail("max_position_embeddings x d_model is over " + std::to_string(kMaxTableValues) +
           " values (the sinusoid table made at load)");
  c.tie_word_embeddings = r.get<bool>("tie_word_embeddings", true);
  c.pad_token_id = r.get<int64_t>("pad_token_id", d.pad_token_id);
  // MBartConfig has no default start; generate() then starts from bos_token_id, as here.
  c.decoder_start_token_id = arch == "MBart"
                                 ? r.get<int64_t>("decoder_start_token_id", r.get<int64_t>("bos_token_id", 0))
                                 : r.get<int64_t>("decoder_start_token_id", d.decoder_start_token_id);
  for (const auto& [key, id] : {std::pair{"pad_token_id", c.pad_token_id}, {"decoder_start_token_id", c.decoder_start_token_id}})
    if (id < 0 || id >= c.vocab_size)
      r.fail(std::string(key) + " must index the vocabulary (" + std::to_string(c.vocab_size) + "), got " +
             std::to_string(id));
  return c;
}

BartScaledWordEmbedding::BartScaledWordEmbedding(int64_t num_embeddings, int64_t embedding_dim, double embed_scale,
                                                 std::string arch)
    : Embedding(num_embeddings, embedding_dim), embed_scale_(embed_scale), arch_(std::move(arch)) {}

at::Tensor BartScaledWordEmbedding::forward_with_weight(const at::Tensor& ids, const at::Tensor& table) {
  return scaled(Embedding::forward_with_weight(ids, table), embed_scale_);
}

FairseqSinusoids::FairseqSinusoids(int64_t dim, int64_t padding_idx, std::string arch)
    : SinusoidalPositions(std::move(arch)), dim_(dim), padding_idx_(padding_idx) {}

at::Tensor FairseqSinusoids::forward(const at::Tensor& ids, int64_t b, int64_t t, int64_t past, at::Device device) {
  at::Tensor pos;
  if (ids.defined()) {  // create_position_ids_from_input_ids
    const auto real = ids.to(device).ne(padding_idx_).to(at::kInt);
    pos = ((at::cumsum(real, 1).to(at::kInt) + past) * real).to(at::kLong) + padding_idx_;
  } else {
    pos = at::arange(padding_idx_ + 1 + past, padding_idx_ + 1 + past + t, at::TensorOptions(at::kLong).device(device))
              .unsqueeze(0)
              .expand({b, t});
  }
  return rows(pos, device);
}

at::Tensor FairseqSinusoids::at_positions(const at::Tensor& ids, const at::Tensor& positions, at::Device device) {
  // As create_position_ids_from_input_ids counts them: padding_idx + 1 + position, and
  // padding_idx (the zero row) for pad tokens.
  auto pos = positions.to(device) + (padding_idx_ + 1);
  if (ids.defined()) pos = pos.masked_fill(ids.to(device).eq(padding_idx_), padding_idx_);
  return rows(pos, device);
}

at::Tensor FairseqSinusoids::rows(const at::Tensor& pos, at::Device device) const {
  const int64_t b = pos.size(0), t = pos.size(1);
  // The rows of transformers' get_embedding table, op for op in float32 (so its bits), for
  // these positions only: no table of pad_token_id + max_position_embeddings rows.
  const int64_t half = dim_ / 2;
  const double step = std::log(10000.0) / static_cast<double>(half - 1);
  const auto freq = at::exp(at::arange(half, at::kLong).to(at::kFloat) * -step).to(device);
  const auto angle = pos.to(at::kFloat).unsqueeze(-1) * freq;
  auto rows = at::cat({at::sin(angle), at::cos(angle)}, -1);
  if (dim_ % 2 == 1) rows = at::cat({rows, at::zeros({b, t, 1}, rows.options())}, -1);
  return rows.masked_fill(pos.eq(padding_idx_).unsqueeze(-1), 0.0);
}

SinusoidTable::SinusoidTable(int64_t positions, int64_t dim, std::string arch) : SinusoidalPositions(std::move(arch)) {
  // As create_weight, in float64 as numpy and then rounded to float32: the angle of column
  // j is pos / 10000^(2 (j // 2) / dim); the sines of the even columns come first, then the
  // cosines of the odd ones.
  const auto pos = at::arange(positions, at::kDouble).unsqueeze(1);
  auto angles = [&](int64_t n) { return pos / at::pow(10000.0, at::arange(n, at::kDouble) * 2.0 / dim); };
  weight = at::cat({at::sin(angles((dim + 1) / 2)), at::cos(angles(dim / 2))}, 1).to(at::kFloat);
  register_buffer("weight", &weight, {positions, dim});
}

at::Tensor SinusoidTable::forward(const at::Tensor&, int64_t, int64_t t, int64_t past, at::Device device) {
  return weight.narrow(0, past, t).to(device);
}

at::Tensor SinusoidTable::at_positions(const at::Tensor&, const at::Tensor& positions, at::Device device) {
  const auto rows = weight.to(device).index_select(0, positions.to(device).reshape(-1));
  return rows.view({positions.size(0), positions.size(1), -1});
}

BartEncoderLayer::BartEncoderLayer(const BartConfig& c)
    : arch_(c.arch), act_(c.activation_function), pre_norm_(c.pre_norm) {
  self_attn = register_module("self_attn", attention(c, c.encoder_attention_heads));
  self_attn_layer_norm = register_module("self_attn_layer_norm", std::make_shared<LayerNorm>(c.d_model, kLayerNormEps));
  fc1 = register_module("fc1", std::make_shared<Linear>(c.d_model, c.encoder_ffn_dim, true));
  fc2 = register_module("fc2", std::make_shared<Linear>(c.encoder_ffn_dim, c.d_model, true));
  final_layer_norm = register_module("final_layer_norm", std::make_shared<LayerNorm>(c.d_model, kLayerNormEps));
}

at::Tensor BartEncoderLayer::forward(const at::Tensor& h, const at::Tensor& mask) {
  const auto x = residual(pre_norm_, *self_attn_layer_norm, h, [&](const at::Tensor& y) {
    return self_attn->forward(y, {}, mask, false, nullptr, nullptr, nullptr, 0);
  });
  return residual(pre_norm_, *final_layer_norm, x,
                  [&](const at::Tensor& y) { return fc2->forward(activation(act_, fc1->forward(y))); });
}

BartDecoderLayer::BartDecoderLayer(const BartConfig& c)
    : arch_(c.arch), act_(c.activation_function), pre_norm_(c.pre_norm) {
  self_attn = register_module("self_attn", attention(c, c.decoder_attention_heads));
  self_attn_layer_norm = register_module("self_attn_layer_norm", std::make_shared<LayerNorm>(c.d_model, kLayerNormEps));
  encoder_attn = register_module("encoder_attn", attention(c, c.decoder_attention_heads));
  encoder_attn_layer_norm =
      register_module("encoder_attn_layer_norm", std::make_shared<LayerNorm>(c.d_model, kLayerNormEps));
  fc1 = register_module("fc1", std::make_shared<Linear>(c.d_model, c.decoder_ffn_dim, true));
  fc2 = register_module("fc2", std::make_shared<Linear>(c.decoder_ffn_dim, c.d_model, true));
  final_layer_norm = register_module("final_layer_norm", std::make_shared<LayerNorm>(c.d_model, kLayerNormEps));
}

at::Tensor BartDecoderLayer::forward(const at::Tensor& h, const at::Tensor& self_mask, const at::Tensor& encoder_states,
                                     const at::Tensor& cross_mask, Seq2SeqCache* cache, size_t index) {
  auto x = residual(pre_norm_, *self_attn_layer_norm, h, [&](const at::Tensor& y) {
    return self_attn->forward(y, {}, self_mask, /*causal=*/true, cache ? &cache->self_attn : nullptr, nullptr, nullptr,
                              index);
  });
  x = residual(pre_norm_, *encoder_attn_layer_norm, x, [&](const at::Tensor& y) {
    return encoder_attn->forward(y, encoder_states, cross_mask, false, nullptr,
                                 cache ? &cache->cross_keys[index] : nullptr,
                                 cache ? &cache->cross_values[index] : nullptr, index);
  });
  return residual(pre_norm_, *final_layer_norm, x,
                  [&](const at::Tensor& y) { return fc2->forward(activation(act_, fc1->forward(y))); });
}

BartEncoder::BartEncoder(const BartConfig& c)
    : arch_(c.arch), max_positions_(c.max_position_embeddings), embed_scale_(stack_scale(c)) {
  embed_tokens = register_module("embed_tokens", token_embedding(c));
  // BART's learned rows, or sinusoids, under one name.
  if (c.positions != BartConfig::Positions::kLearned) sinusoidal_positions = register_module("embed_positions", sinusoids(c));
  else embed_positions = register_module("embed_positions", learned_positions(c));
  layers = register_module("layers", std::make_shared<ModuleList<BartEncoderLayer>>());
  for (int64_t i = 0; i < c.encoder_layers; ++i) layers->push_back(std::make_shared<BartEncoderLayer>(c));
  if (c.layernorm_embedding)
    layernorm_embedding = register_module("layernorm_embedding", std::make_shared<LayerNorm>(c.d_model, kLayerNormEps));
  if (c.pre_norm) layer_norm = register_module("layer_norm", std::make_shared<LayerNorm>(c.d_model, kLayerNormEps));
}

at::Tensor BartEncoder::embed(const at::Tensor& ids) { return scaled(embed_tokens->forward(ids), embed_scale_); }

at::Tensor BartEncoder::forward(const at::Tensor& embeds, const at::Tensor& mask, bool checkpoint, const at::Tensor& ids) {
  const int64_t b = embeds.size(0), s = embeds.size(1);
  if (s > max_positions_)
    throw std::invalid_argument(arch_ + "Encoder takes at most " + std::to_string(max_positions_) +
                                " positions (max_position_embeddings); got " + std::to_string(s));
  auto h = embeds + positions(embed_positions.get(), sinusoidal_positions.get(), ids, b, s, 0, embeds.device(),
                             embeds.scalar_type());
  if (layernorm_embedding) h = layernorm_embedding->forward(h);
  const auto m = padding_mask(mask, b, s, s, h.device());
  h = run_layers(layers->size(), checkpoint, h, {m},
                 [this](size_t i, const std::vector<at::Tensor>& v) { return (*layers)[i].forward(v[0], v[1]); });
  return layer_norm ? layer_norm->forward(h) : h;
}

BartDecoder::BartDecoder(const BartConfig& c)
    : arch_(c.arch), max_positions_(c.max_position_embeddings), embed_scale_(stack_scale(c)) {
  embed_tokens = register_module("embed_tokens", token_embedding(c));
  // BART's learned rows, or sinusoids, under one name.
  if (c.positions != BartConfig::Positions::kLearned) sinusoidal_positions = register_module("embed_positions", sinusoids(c));
  else embed_positions = register_module("embed_positions", learned_positions(c));
  layers = register_module("layers", std::make_shared<ModuleList<BartDecoderLayer>>());
  for (int64_t i = 0; i < c.decoder_layers; ++i) layers->push_back(std::make_shared<BartDecoderLayer>(c));
  if (c.layernorm_embedding)
    layernorm_embedding = register_module("layernorm_embedding", std::make_shared<LayerNorm>(c.d_model, kLayerNormEps));
  if (c.pre_norm) layer_norm = register_module("layer_norm", std::make_shared<LayerNorm>(c.d_model, kLayerNormEps));
}

at::Tensor BartDecoder::forward(const Seq2SeqInputs& in, const at::Tensor& encoder_states) {
  Seq2SeqCache* cache = in.cache;
  const size_t n = layers->size();
  size_seq2seq_cache(cache, n);
  const int64_t b = in.decoder_input_ids.size(0), t = in.decoder_input_ids.size(1);
  const int64_t past = cache ? cache->length() : 0;
  const bool own_positions = in.decoder_position_ids.defined();  // left-padded rows: the cache's length is not theirs
  if (own_positions) check_decoder_positions(in.decoder_position_ids, b, t, max_positions_, arch_ + "Decoder");
  else if (past + t > max_positions_)
    throw std::invalid_argument(arch_ + "Decoder takes at most " + std::to_string(max_positions_) +
                                " positions (max_position_embeddings); got " + std::to_string(past + t));
  auto h = scaled(embed_tokens->forward(in.decoder_input_ids), embed_scale_);
  h = h + (own_positions ? positions_at(embed_positions.get(), sinusoidal_positions.get(), in.decoder_input_ids,
                                        in.decoder_position_ids, h.device(), h.scalar_type())
                         : positions(embed_positions.get(), sinusoidal_positions.get(), in.decoder_input_ids, b, t,
                                     past, h.device(), h.scalar_type()));
  if (layernorm_embedding) h = layernorm_embedding->forward(h);
  const auto self_mask = decoder_mask(in.decoder_attention_mask, b, t, past, h.device());
  const auto cross_mask = padding_mask(in.attention_mask, b, t, encoder_states.size(1), h.device());
  h = run_layers(n, in.checkpoint_layers && !cache, h, {self_mask, encoder_states, cross_mask},
                 [this, cache](size_t i, const std::vector<at::Tensor>& v) {
                   return (*layers)[i].forward(v[0], v[1], v[2], v[3], cache, i);
                 });
  return layer_norm ? layer_norm->forward(h) : h;
}

BartModel::BartModel(const BartConfig& c) : arch_(c.arch) {
  shared = register_module("shared", token_embedding(c));
  encoder = register_module("encoder", std::make_shared<BartEncoder>(c));
  decoder = register_module("decoder", std::make_shared<BartDecoder>(c));
}

BartForConditionalGeneration::BartForConditionalGeneration(const nlohmann::json& j, const std::string& where,
                                                           const std::string& arch)
    : Model(j), cfg_(BartConfig::from_json(j, where, arch)) {
  model = register_module("model", std::make_shared<BartModel>(cfg_));
  lm_head = register_module("lm_head", std::make_shared<Linear>(cfg_.d_model, cfg_.vocab_size, false));
  final_logits_bias = at::zeros({1, cfg_.vocab_size});
  if (cfg_.logits_bias) register_buffer("final_logits_bias", &final_logits_bias, {1, cfg_.vocab_size});
}

std::string BartForConditionalGeneration::type_name() const {
  return cfg_.arch == "Marian" ? "MarianMTModel" : cfg_.arch + "ForConditionalGeneration";
}

std::vector<std::string> BartForConditionalGeneration::tied_parameter_names() const {
  if (!cfg_.tie_word_embeddings) return {};  // transformers 5 then ties nothing: four tables
  return {"model.shared.weight", "model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight",
          "lm_head.weight"};
}

void BartForConditionalGeneration::tie_weights() {
  if (!cfg_.tie_word_embeddings) return;
  // As transformers 5: the shared table comes from whichever copy the checkpoint holds, and
  // each copy is tied to it unless the checkpoint holds that copy with other values.
  auto& shared = model->shared->weight;
  std::vector<at::Tensor*> copies = {&model->encoder->embed_tokens->weight, &model->decoder->embed_tokens->weight,
                                     &lm_head->weight};
  for (const at::Tensor* copy : copies)
    if (!shared.defined() && copy->defined()) shared = *copy;
  if (!shared.defined())
    throw std::runtime_error(type_name() + ": the checkpoint has no 'model.shared.weight' (nor a copy "
                             "of it: the encoder's or decoder's embed_tokens, lm_head)");
  for (at::Tensor* copy : copies)
    if (!copy->defined() || at::equal(*copy, shared)) *copy = shared;
}

Seq2SeqOutputs BartForConditionalGeneration::run_seq2seq(const Seq2SeqInputs& in) {
  if (!in.decoder_input_ids.defined()) throw std::invalid_argument(type_name() + ": decoder_input_ids are required");
  for (const auto* ids : {&in.input_ids, &in.decoder_input_ids}) {
    if (!ids->defined()) continue;
    ModelInputs check;
    check.input_ids = *ids;
    check_inputs(check);
  }
  Seq2SeqOutputs out;
  at::Tensor enc = in.encoder_hidden_states;
  if (!enc.defined()) {
    if (!in.input_ids.defined() && !in.inputs_embeds.defined())
      throw std::invalid_argument(type_name() + ": input_ids or inputs_embeds are required");
    const bool embedded = in.inputs_embeds.defined();  // soft prompts: positions count on regardless
    enc = model->encoder->forward(embedded ? in.inputs_embeds : model->encoder->embed(in.input_ids),
                                  in.attention_mask, in.checkpoint_layers, embedded ? at::Tensor() : in.input_ids);
  }
  out.encoder_last_hidden_state = enc;
  const auto h = model->decoder->forward(in, enc);
  out.logits = lm_head->forward(h);
  if (cfg_.logits_bias) out.logits = out.logits + final_logits_bias.to(h.scalar_type());
  return out;
}

at::Tensor BartForConditionalGeneration::decoder_inputs_from_labels(const at::Tensor& labels) const {
  if (cfg_.arch != "MBart") return Seq2SeqLM::decoder_inputs_from_labels(labels);
  // mBART's shift_tokens_right: each row starts with its last non-pad token (the language id).
  const auto ids = labels.masked_fill(labels == -100, cfg_.pad_token_id);
  const auto last = (ids.ne(cfg_.pad_token_id).sum(1) - 1).clamp_min(0).unsqueeze(-1);
  auto out = at::empty_like(ids);
  out.narrow(1, 1, ids.size(1) - 1).copy_(ids.narrow(1, 0, ids.size(1) - 1));
  out.select(1, 0).copy_(ids.gather(1, last).squeeze(-1));
  return out;
}

ModelOutputs BartForConditionalGeneration::run(const ModelInputs&) {
  refuse_one_sequence(type_name(), "encoder and decoder inputs");
}

}  // namespace peft
