#include "models/opt.h"

#include <ATen/ATen.h>

#include <cmath>

#include "models/attention.h"
#include "models/checkpoint.h"
#include "models/seq_cls_head.h"
#include "models/config_reader.h"
#include "models/model_config.h"

namespace peft {

namespace {
constexpr double kLayerNormEps = 1e-5;  // nn.LayerNorm's default; OPT's config has no key
constexpr int64_t kPositionOffset = 2;  // OPTLearnedPositionalEmbedding.offset
}  // namespace

OPTConfig OPTConfig::from_json(const nlohmann::json& j, const std::string& where) {
  ConfigReader r(j, where);
  OPTConfig c;
  c.vocab_size = r.dim("vocab_size", 50272, ConfigLimits::kVocab);
  c.hidden_size = r.dim("hidden_size", 768, ConfigLimits::kWidth);
  c.num_layers = r.dim("num_hidden_layers", 12, ConfigLimits::kLayers);
  c.num_heads = r.dim("num_attention_heads", 12, ConfigLimits::kHeads);
  c.ffn_dim = r.dim("ffn_dim", 3072, ConfigLimits::kWidth);
  c.max_position_embeddings = r.dim("max_position_embeddings", 2048, ConfigLimits::kPositions);
  c.word_embed_proj_dim = r.dim("word_embed_proj_dim", c.hidden_size, ConfigLimits::kWidth);
  c.do_layer_norm_before = r.get<bool>("do_layer_norm_before", true);
  c.final_layer_norm = c.do_layer_norm_before && !r.get<bool>("_remove_final_layer_norm", false);
  c.enable_bias = r.get<bool>("enable_bias", true);
  c.tie_word_embeddings = r.get<bool>("tie_word_embeddings", true);
  c.activation_function = r.get<std::string>("activation_function", "relu");
  check_activation(c.activation_function);
  if (!r.get<bool>("layer_norm_elementwise_affine", true))
    r.fail("layer_norm_elementwise_affine=false (LayerNorms without weight and bias) is not supported");
  if (c.hidden_size % c.num_heads != 0) r.fail("hidden_size is not a multiple of num_attention_heads");
  return c;
}

OPTAttention::OPTAttention(const OPTConfig& c) : heads_(c.num_heads), head_dim_(c.hidden_size / c.num_heads) {
  const int64_t d = c.hidden_size;
  k_proj = register_module("k_proj", std::make_shared<Linear>(d, d, c.enable_bias));
  v_proj = register_module("v_proj", std::make_shared<Linear>(d, d, c.enable_bias));
  q_proj = register_module("q_proj", std::make_shared<Linear>(d, d, c.enable_bias));
  out_proj = register_module("out_proj", std::make_shared<Linear>(d, d, c.enable_bias));
}

at::Tensor OPTAttention::forward(const at::Tensor& h, const at::Tensor& mask, KVCache* cache, size_t layer) {
  // As transformers: the queries are scaled, then the product runs with scale 1.
  auto q = split_heads(q_proj->forward(h) * (1.0 / std::sqrt(static_cast<double>(head_dim_))), heads_, head_dim_);
  auto k = split_heads(k_proj->forward(h), heads_, head_dim_);
  auto v = split_heads(v_proj->forward(h), heads_, head_dim_);
  update_cache(cache, layer, k, v);
  return out_proj->forward(attend(q, k, v, mask, 1.0, /*is_causal=*/true));
}

OPTDecoderLayer::OPTDecoderLayer(const OPTConfig& c)
    : pre_norm_(c.do_layer_norm_before), act_(c.activation_function) {
  self_attn = register_module("self_attn", std::make_shared<OPTAttention>(c));
  self_attn_layer_norm = register_module("self_attn_layer_norm", std::make_shared<LayerNorm>(c.hidden_size, kLayerNormEps));
  fc1 = register_module("fc1", std::make_shared<Linear>(c.hidden_size, c.ffn_dim, c.enable_bias));
  fc2 = register_module("fc2", std::make_shared<Linear>(c.ffn_dim, c.hidden_size, c.enable_bias));
  final_layer_norm = register_module("final_layer_norm", std::make_shared<LayerNorm>(c.hidden_size, kLayerNormEps));
}

at::Tensor OPTDecoderLayer::forward(const at::Tensor& h, const at::Tensor& mask, KVCache* cache, size_t layer) {
  auto x = h + self_attn->forward(pre_norm_ ? self_attn_layer_norm->forward(h) : h, mask, cache, layer);
  if (!pre_norm_) x = self_attn_layer_norm->forward(x);
  auto y = x + fc2->forward(activation(act_, fc1->forward(pre_norm_ ? final_layer_norm->forward(x) : x)));
  return pre_norm_ ? y : final_layer_norm->forward(y);
}

OPTDecoder::OPTDecoder(const OPTConfig& c) {
  embed_tokens = register_module("embed_tokens", std::make_shared<Embedding>(c.vocab_size, c.word_embed_proj_dim));
  embed_positions = register_module(
      "embed_positions", std::make_shared<Embedding>(c.max_position_embeddings + kPositionOffset, c.hidden_size));
  if (c.word_embed_proj_dim != c.hidden_size) {
    project_out = register_module("project_out", std::make_shared<Linear>(c.hidden_size, c.word_embed_proj_dim, false));
    project_in = register_module("project_in", std::make_shared<Linear>(c.word_embed_proj_dim, c.hidden_size, false));
  }
  if (c.final_layer_norm)
    final_layer_norm = register_module("final_layer_norm", std::make_shared<LayerNorm>(c.hidden_size, kLayerNormEps));
  layers = register_module("layers", std::make_shared<ModuleList<OPTDecoderLayer>>());
  for (int64_t i = 0; i < c.num_layers; ++i) layers->push_back(std::make_shared<OPTDecoderLayer>(c));
}

at::Tensor OPTDecoder::forward(const ModelInputs& in) {
  auto h = in.inputs_embeds.defined() ? in.inputs_embeds : embed_tokens->forward(in.input_ids);
  const auto step = begin_decoder_step(in, layers->size(), h.device());
  // Without position ids OPT counts positions over the attention mask, cached positions
  // included, so left padding does not shift a row's positions (padding gets -1).
  at::Tensor positions = step.positions;
  if (!in.position_ids.defined() && in.attention_mask.defined()) {
    const auto m = in.attention_mask.to(at::kLong);
    positions = (m.cumsum(1) * m - 1).narrow(1, step.past, in.seq_len());
  }
  auto pos = embed_positions->forward(positions + kPositionOffset);
  if (project_in) h = project_in->forward(h);
  h = h + pos;
  h = run_decoder_blocks(layers->size(), h, in, [this, mask = step.mask](size_t i, const at::Tensor& x, KVCache* c) {
    return (*layers)[i].forward(x, mask, c, i);
  });
  if (final_layer_norm) h = final_layer_norm->forward(h);
  return project_out ? project_out->forward(h) : h;
}

OPTForCausalLM::OPTForCausalLM(const nlohmann::json& j, const std::string& where)
    : OPTForCausalLM(j, OPTConfig::from_json(j, where)) {}

OPTForCausalLM::OPTForCausalLM(const nlohmann::json& j, OPTConfig cfg)
    : CausalLMBase(j, cfg.tie_word_embeddings), cfg_(std::move(cfg)) {
  model = register_module("model", std::make_shared<OPTModel>(cfg_));
  add_lm_head(cfg_.word_embed_proj_dim, cfg_.vocab_size);
}

std::shared_ptr<Model> make_opt_classifier(const nlohmann::json& j, const std::string& where) {
  auto c = OPTConfig::from_json(j, where);
  return std::make_shared<DecoderForSequenceClassification<OPTModel>>(j, where, "OPTForSequenceClassification", "model",
                                                                     std::make_shared<OPTModel>(c), c.word_embed_proj_dim,
                                                                     c.num_layers, c.max_position_embeddings);
}

}  // namespace peft
