#include "models/whisper.h"

#include <ATen/ATen.h>

#include <cmath>
#include <stdexcept>

#include "models/attention.h"
#include "models/checkpoint.h"

namespace peft {

namespace {

// transformers' sinusoids(length, channels): sin then cos of position / 10000**(i / (c/2 - 1)).
at::Tensor sinusoids(int64_t length, int64_t channels) {
  const double increment = std::log(10000.0) / static_cast<double>(channels / 2 - 1);
  const auto inv = at::exp(-increment * at::arange(channels / 2, at::kFloat));
  const auto t = at::arange(length, at::kFloat).view({-1, 1}) * inv.view({1, -1});
  return at::cat({t.sin(), t.cos()}, 1);
}

// q_proj scaled before the product, k_proj without bias, as transformers' WhisperAttention.
std::shared_ptr<Seq2SeqAttention> attention(int64_t d_model, int64_t heads) {
  return std::make_shared<Seq2SeqAttention>(d_model, heads,
                                            Seq2SeqAttention::Options{"WhisperAttention", false, true});
}

}  // namespace

WhisperConv1d::WhisperConv1d(int64_t in, int64_t out, int64_t stride) : stride_(stride) {
  register_parameter("weight", &weight, {out, in, 3});
  register_parameter("bias", &bias, {out});
}

at::Tensor WhisperConv1d::forward(const at::Tensor& x) const { return at::conv1d(x, weight, bias, {stride_}, {1}); }

WhisperEncoderLayer::WhisperEncoderLayer(const WhisperConfig& c) : act_(c.activation_function) {
  self_attn = register_module("self_attn", attention(c.d_model, c.encoder_attention_heads));
  self_attn_layer_norm = register_module("self_attn_layer_norm", std::make_shared<LayerNorm>(c.d_model, 1e-5));
  fc1 = register_module("fc1", std::make_shared<Linear>(c.d_model, c.encoder_ffn_dim, true));
  fc2 = register_module("fc2", std::make_shared<Linear>(c.encoder_ffn_dim, c.d_model, true));
  final_layer_norm = register_module("final_layer_norm", std::make_shared<LayerNorm>(c.d_model, 1e-5));
}

at::Tensor WhisperEncoderLayer::forward(const at::Tensor& h) {
  auto x = h + self_attn->forward(self_attn_layer_norm->forward(h), {}, {}, false, nullptr, nullptr, nullptr, 0);
  return x + fc2->forward(activation(act_, fc1->forward(final_layer_norm->forward(x))));
}

WhisperDecoderLayer::WhisperDecoderLayer(const WhisperConfig& c) : act_(c.activation_function) {
  self_attn = register_module("self_attn", attention(c.d_model, c.decoder_attention_heads));
  self_attn_layer_norm = register_module("self_attn_layer_norm", std::make_shared<LayerNorm>(c.d_model, 1e-5));
  encoder_attn =
      register_module("encoder_attn", attention(c.d_model, c.decoder_attention_heads));
  encoder_attn_layer_norm = register_module("encoder_attn_layer_norm", std::make_shared<LayerNorm>(c.d_model, 1e-5));
  fc1 = register_module("fc1", std::make_shared<Linear>(c.d_model, c.decoder_ffn_dim, true));
  fc2 = register_module("fc2", std::make_shared<Linear>(c.decoder_ffn_dim, c.d_model, true));
  final_layer_norm = register_module("final_layer_norm", std::make_shared<LayerNorm>(c.d_model, 1e-5));
}

at::Tensor WhisperDecoderLayer::forward(const at::Tensor& h, const at::Tensor& self_mask,
                                        const at::Tensor& encoder_states, Seq2SeqCache* cache, size_t index) {
  auto x = h + self_attn->forward(self_attn_layer_norm->forward(h), {}, self_mask, /*causal=*/true,
                                  cache ? &cache->self_attn : nullptr, nullptr, nullptr, index);
  if (encoder_states.defined())
    x = x + encoder_attn->forward(encoder_attn_layer_norm->forward(x), encoder_states, {}, false, nullptr,
                                  cache ? &cache->cross_keys[index] : nullptr,
                                  cache ? &cache->cross_values[index] : nullptr, index);
  return x + fc2->forward(activation(act_, fc1->forward(final_layer_norm->forward(x))));
}

WhisperEncoder::WhisperEncoder(const WhisperConfig& c) {
  conv1 = register_module("conv1", std::make_shared<WhisperConv1d>(c.num_mel_bins, c.d_model, 1));
  conv2 = register_module("conv2", std::make_shared<WhisperConv1d>(c.d_model, c.d_model, 2));
  embed_positions = register_module("embed_positions", std::make_shared<Embedding>(c.max_source_positions, c.d_model));
  layers = register_module("layers", std::make_shared<ModuleList<WhisperEncoderLayer>>());
  for (int64_t i = 0; i < c.encoder_layers; ++i) layers->push_back(std::make_shared<WhisperEncoderLayer>(c));
  layer_norm = register_module("layer_norm", std::make_shared<LayerNorm>(c.d_model, 1e-5));
}

at::Tensor WhisperEncoder::forward(const at::Tensor& input_features, bool checkpoint) {
  const int64_t positions = embed_positions->num_embeddings, frames = 2 * positions;
  const int64_t mels = conv1->weight.size(1);
  if (input_features.dim() != 3 || input_features.size(1) != mels || input_features.size(2) != frames)
    throw std::invalid_argument("Whisper expects input_features [batch, " + std::to_string(mels) + " mel bins, " +
                                std::to_string(frames) + " frames] (pad the log-mel features to " +
                                std::to_string(frames) + "), got " + c10::str(input_features.sizes()));
  const auto x = input_features.to(conv1->weight.device(), conv1->weight.scalar_type());
  auto h = at::gelu(conv2->forward(at::gelu(conv1->forward(x)))).permute({0, 2, 1});
  h = h + embed_positions->forward(at::arange(positions, at::TensorOptions(at::kLong).device(h.device())));
  h = run_layers(layers->size(), checkpoint, h, {},
                 [this](size_t i, const std::vector<at::Tensor>& v) { return (*layers)[i].forward(v[0]); });
  return layer_norm->forward(h);
}

WhisperDecoder::WhisperDecoder(const WhisperConfig& c) : max_positions_(c.max_target_positions) {
  embed_tokens = register_module("embed_tokens", std::make_shared<Embedding>(c.vocab_size, c.d_model));
  embed_positions =
      register_module("embed_positions", std::make_shared<Embedding>(c.max_target_positions, c.d_model));
  layers = register_module("layers", std::make_shared<ModuleList<WhisperDecoderLayer>>());
  for (int64_t i = 0; i < c.decoder_layers; ++i) layers->push_back(std::make_shared<WhisperDecoderLayer>(c));
  layer_norm = register_module("layer_norm", std::make_shared<LayerNorm>(c.d_model, 1e-5));
}

at::Tensor WhisperDecoder::forward(const Seq2SeqInputs& in, const at::Tensor& encoder_states) {
  Seq2SeqCache* cache = in.cache;
  const size_t n = layers->size();
  size_seq2seq_cache(cache, n);
  const int64_t b = in.decoder_input_ids.size(0), t = in.decoder_input_ids.size(1);
  const int64_t past = cache ? cache->length() : 0;
  const bool own_positions = in.decoder_position_ids.defined();  // left-padded rows: the cache's length is not theirs
  if (own_positions)
    check_decoder_positions(in.decoder_position_ids, b, t, max_positions_, "WhisperForConditionalGeneration");
  else if (past + t > max_positions_)
    throw std::invalid_argument("WhisperForConditionalGeneration takes at most " + std::to_string(max_positions_) +
                                " decoder positions (max_target_positions); got " + std::to_string(past + t));
  auto h = embed_tokens->forward(in.decoder_input_ids);
  // WhisperPositionalEmbedding reads its weight rows directly (no embedding forward).
  const auto& table = embed_positions->weight;
  h = h + (own_positions ? table.index_select(0, in.decoder_position_ids.to(table.device()).reshape(-1)).view({b, t, -1})
                         : table.narrow(0, past, t));
  const auto mask = decoder_mask(in.decoder_attention_mask, b, t, past, h.device());
  h = run_layers(n, in.checkpoint_layers && !cache, h, {mask, encoder_states},
                 [this, cache](size_t i, const std::vector<at::Tensor>& v) {
                   return (*layers)[i].forward(v[0], v[1], v[2], cache, i);
                 });
  return layer_norm->forward(h);
}

WhisperModel::WhisperModel(const WhisperConfig& c) {
  encoder = register_module("encoder", std::make_shared<WhisperEncoder>(c));
  decoder = register_module("decoder", std::make_shared<WhisperDecoder>(c));
}

WhisperForConditionalGeneration::WhisperForConditionalGeneration(const nlohmann::json& j, const std::string& where)
    : Model(j), cfg_(WhisperConfig::from_json(j, where)) {
  model = register_module("model", std::make_shared<WhisperModel>(cfg_));
  proj_out = register_module("proj_out", std::make_shared<Linear>(cfg_.d_model, cfg_.vocab_size, false));
}

std::vector<std::string> WhisperForConditionalGeneration::tied_parameter_names() const {
  std::vector<std::string> names = {"model.encoder.embed_positions.weight"};
  if (cfg_.tie_word_embeddings) names.push_back("proj_out.weight");
  return names;
}

void WhisperForConditionalGeneration::tie_weights() {
  auto& positions = model->encoder->embed_positions->weight;
  if (!positions.defined()) {
    const auto& like = model->decoder->embed_tokens->weight;
    positions = sinusoids(cfg_.max_source_positions, cfg_.d_model).to(like.device(), like.scalar_type());
  }
  if (cfg_.tie_word_embeddings) proj_out->weight = model->decoder->embed_tokens->weight;
}

Seq2SeqOutputs WhisperForConditionalGeneration::run_seq2seq(const Seq2SeqInputs& in) {
  if (!in.decoder_input_ids.defined()) throw std::invalid_argument(type_name() + ": decoder_input_ids are required");
  ModelInputs check;
  check.input_ids = in.decoder_input_ids;
  check_inputs(check);
  if (in.input_ids.defined() || in.inputs_embeds.defined())
    throw std::invalid_argument(type_name() + " reads audio: pass input_features (log-mel), not token ids");
  Seq2SeqOutputs out;
  at::Tensor enc = in.encoder_hidden_states;
  if (!enc.defined()) {
    if (!in.input_features.defined())
      throw std::invalid_argument(type_name() + ": input_features (or encoder_hidden_states) are required");
    enc = model->encoder->forward(in.input_features, in.checkpoint_layers);
  }
  out.encoder_last_hidden_state = enc;
  out.logits = proj_out->forward(model->decoder->forward(in, enc));
  return out;
}

ModelOutputs WhisperForConditionalGeneration::run(const ModelInputs&) {
  refuse_one_sequence(type_name(), "audio input_features and decoder inputs");
}

}  // namespace peft
