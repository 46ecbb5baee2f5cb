#include "models/cohere.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "models/checkpoint.h"
#include "models/config_reader.h"
#include "models/model_config.h"

namespace peft {

namespace {

// Rotates x [b, h, s, d] in float32 with angles in the interleaved layout (each frequency
// serving a pair of neighbouring features), as Cohere's apply_rotary_pos_emb.
at::Tensor rotate(const at::Tensor& x, const RotaryEmbedding::Angles& a) {
  const auto xf = x.to(at::kFloat);
  return (xf * a.cos + rotate_every_two(xf) * a.sin).to(x.scalar_type());
}

}  // namespace

CohereConfig CohereConfig::from_json(const nlohmann::json& j, const std::string& where, const std::string& arch) {
  ConfigReader r(j, where);
  CohereConfig c;
  c.arch = arch;
  c.vocab_size = r.dim("vocab_size", 256000, ConfigLimits::kVocab);
  c.hidden_size = r.dim("hidden_size", 8192, ConfigLimits::kWidth);
  c.intermediate_size = r.dim("intermediate_size", 22528, ConfigLimits::kWidth);
  c.num_layers = r.dim("num_hidden_layers", 40, ConfigLimits::kLayers);
  c.num_heads = r.dim("num_attention_heads", 64, ConfigLimits::kHeads);
  c.num_kv_heads = r.dim("num_key_value_heads", c.num_heads, ConfigLimits::kHeads);
  if (c.num_heads % c.num_kv_heads != 0) r.fail("num_attention_heads is not a multiple of num_key_value_heads");
  const bool v2 = arch == "Cohere2";
  if ((v2 || !r.has("head_dim")) && c.hidden_size % c.num_heads != 0)
    r.fail("hidden_size is not a multiple of num_attention_heads");
  // Cohere2Config sets head_dim to hidden_size / num_attention_heads, whatever the file says.
  c.head_dim = v2 ? c.hidden_size / c.num_heads : r.dim("head_dim", c.hidden_size / c.num_heads, ConfigLimits::kWidth);
  if (c.head_dim % 2 != 0) r.fail("head_dim must be even (rotary pairs)");
  c.max_position_embeddings = r.dim("max_position_embeddings", 8192, ConfigLimits::kPositions);
  c.layer_norm_eps = r.positive("layer_norm_eps", 1e-5);
  if (!r.has("logit_scale") && r.json().contains("logit_scale")) r.fail("'logit_scale' must be a number");
  c.logit_scale = r.get<double>("logit_scale", 0.0625);
  if (!std::isfinite(c.logit_scale)) r.fail("'logit_scale' must be finite");
  c.hidden_act = r.get<std::string>("hidden_act", "silu");
  check_activation(c.hidden_act);
  c.attention_bias = r.get<bool>("attention_bias", false);
  c.use_qk_norm = !v2 && r.get<bool>("use_qk_norm", false);  // Cohere 2 has no q/k norms
  c.tie_word_embeddings = r.get<bool>("tie_word_embeddings", true);
  c.rope = read_rope_parameters(r, "rope_theta", v2 ? 10000.0 : 500000.0);
  c.sliding.assign(static_cast<size_t>(c.num_layers), false);
  if (v2) {  // layer_types, else the older sliding_window_pattern: every pattern-th layer global
    const int64_t pattern = r.dim("sliding_window_pattern", 4, ConfigLimits::kLayers);
    c.sliding = read_sliding_layers(r, c.num_layers, [pattern](int64_t i) { return (i + 1) % pattern != 0; });
    if (std::find(c.sliding.begin(), c.sliding.end(), true) != c.sliding.end()) {
      // transformers would run a null window's sliding layers global and without rotary.
      if (r.json().contains("sliding_window") && r.json()["sliding_window"].is_null())
        r.fail("'sliding_window' is null but layer_types has sliding_attention layers");
      c.sliding_window = r.dim("sliding_window", 4096, ConfigLimits::kPositions);
    }
  }
  return c;
}

CohereLayerNorm::CohereLayerNorm(std::vector<int64_t> shape, double eps) : dim_(shape.back()), eps_(eps) {
  register_parameter("weight", &weight, std::move(shape));
}

at::Tensor CohereLayerNorm::base_forward(const at::Tensor& x) {
  const auto y = at::layer_norm(x.to(at::kFloat), {dim_}, {}, {}, eps_) * weight.to(at::kFloat);
  return y.to(x.scalar_type());
}

CohereAttention::CohereAttention(const CohereConfig& c, bool rotary)
    : arch_(c.arch), rotary_(rotary), heads_(c.num_heads), kv_heads_(c.num_kv_heads), head_dim_(c.head_dim) {
  q_proj = register_module("q_proj", std::make_shared<Linear>(c.hidden_size, heads_ * head_dim_, c.attention_bias));
  k_proj = register_module("k_proj", std::make_shared<Linear>(c.hidden_size, kv_heads_ * head_dim_, c.attention_bias));
  v_proj = register_module("v_proj", std::make_shared<Linear>(c.hidden_size, kv_heads_ * head_dim_, c.attention_bias));
  o_proj = register_module("o_proj", std::make_shared<Linear>(heads_ * head_dim_, c.hidden_size, c.attention_bias));
  if (c.use_qk_norm) {
    q_norm = register_module("q_norm", std::make_shared<CohereLayerNorm>(std::vector<int64_t>{heads_, head_dim_},
                                                                         c.layer_norm_eps));
    k_norm = register_module("k_norm", std::make_shared<CohereLayerNorm>(std::vector<int64_t>{kv_heads_, head_dim_},
                                                                         c.layer_norm_eps));
  }
}

at::Tensor CohereAttention::forward(const at::Tensor& h, const RotaryEmbedding::Angles& rope, const at::Tensor& mask,
                                    KVCache* cache, size_t layer) {
  const int64_t b = h.size(0), s = h.size(1);
  auto q = q_proj->forward(h).view({b, s, heads_, head_dim_});
  auto k = k_proj->forward(h).view({b, s, kv_heads_, head_dim_});
  if (q_norm) {  // per head, before the heads move forward
    q = q_norm->forward(q);
    k = k_norm->forward(k);
  }
  q = q.transpose(1, 2);
  k = k.transpose(1, 2);
  if (rotary_) {
    q = rotate(q, rope);
    k = rotate(k, rope);
  }
  auto v = split_heads(v_proj->forward(h), kv_heads_, head_dim_);
  update_cache(cache, layer, k, v);
  return o_proj->forward(attend(q, k, v, mask, 1.0 / std::sqrt(static_cast<double>(head_dim_)), /*is_causal=*/true));
}

CohereMLP::CohereMLP(const CohereConfig& c) : act_(c.hidden_act) {
  gate_proj = register_module("gate_proj", std::make_shared<Linear>(c.hidden_size, c.intermediate_size, false));
  up_proj = register_module("up_proj", std::make_shared<Linear>(c.hidden_size, c.intermediate_size, false));
  down_proj = register_module("down_proj", std::make_shared<Linear>(c.intermediate_size, c.hidden_size, false));
}

at::Tensor CohereMLP::base_forward(const at::Tensor& x) {
  return down_proj->forward(activation(act_, gate_proj->forward(x)) * up_proj->forward(x));
}

CohereDecoderLayer::CohereDecoderLayer(const CohereConfig& c, size_t index)
    : arch_(c.arch), sliding_(c.sliding.at(index)) {
  self_attn = register_module("self_attn", std::make_shared<CohereAttention>(c, c.rotary(index)));
  mlp = register_module("mlp", std::make_shared<CohereMLP>(c));
  input_layernorm = register_module(
      "input_layernorm", std::make_shared<CohereLayerNorm>(std::vector<int64_t>{c.hidden_size}, c.layer_norm_eps));
}

at::Tensor CohereDecoderLayer::forward(const at::Tensor& h, const RotaryEmbedding::Angles& rope, const at::Tensor& mask,
                                       KVCache* cache, size_t layer) {
  const auto x = input_layernorm->forward(h);
  return h + self_attn->forward(x, rope, mask, cache, layer) + mlp->forward(x);  // transformers' order
}

CohereModel::CohereModel(const CohereConfig& c)
    : arch_(c.arch), rope_(c.rope, c.head_dim, c.max_position_embeddings), sliding_window_(c.sliding_window) {
  embed_tokens = register_module("embed_tokens", std::make_shared<Embedding>(c.vocab_size, c.hidden_size));
  layers = register_module("layers", std::make_shared<ModuleList<CohereDecoderLayer>>());
  for (int64_t i = 0; i < c.num_layers; ++i)
    layers->push_back(std::make_shared<CohereDecoderLayer>(c, static_cast<size_t>(i)));
  norm = register_module("norm",
                         std::make_shared<CohereLayerNorm>(std::vector<int64_t>{c.hidden_size}, c.layer_norm_eps));
}

at::Tensor CohereModel::forward(const ModelInputs& in) {
  auto h = in.inputs_embeds.defined() ? in.inputs_embeds : embed_tokens->forward(in.input_ids);
  auto step = begin_decoder_step(in, layers->size(), h.device());
  // The shared rotary angles (cat layout) re-laid out for interleaved pairs, in float32.
  const auto cat = rope_.angles(step.positions, at::kFloat, h.device());
  const int64_t half = cat.cos.size(-1) / 2;
  const RotaryEmbedding::Angles angles{cat.cos.narrow(-1, 0, half).repeat_interleave(2, -1),
                                       cat.sin.narrow(-1, 0, half).repeat_interleave(2, -1)};
  const at::Tensor window = sliding_window_ > 0 ? step.window_mask(in, sliding_window_, h.device()) : at::Tensor();
  h = run_decoder_blocks(layers->size(), h, in, [this, angles, mask = step.mask, window](size_t i, const at::Tensor& x,
                                                                                      KVCache* c) {
    auto& layer = (*layers)[i];
    return layer.forward(x, angles, layer.sliding() ? window : mask, c, i);
  });
  return norm->forward(h);
}

CohereForCausalLM::CohereForCausalLM(const nlohmann::json& j, const std::string& where, const std::string& arch)
    : CohereForCausalLM(j, CohereConfig::from_json(j, where, arch)) {}

CohereForCausalLM::CohereForCausalLM(const nlohmann::json& j, CohereConfig cfg)
    : CausalLMBase(j, cfg.tie_word_embeddings), cfg_(std::move(cfg)) {
  model = register_module("model", std::make_shared<CohereModel>(cfg_));
  add_lm_head(cfg_.hidden_size, cfg_.vocab_size);
}

ModelOutputs CohereForCausalLM::run(const ModelInputs& in) {
  if (cfg_.logit_scale == 1.0) return CausalLMBase::run(in);
  ModelOutputs out;
  out.last_hidden_state = body_forward(in);
  if (!in.skip_logits) out.logits = lm_head->forward(out.last_hidden_state) * cfg_.logit_scale;
  return out;
}

}  // namespace peft
