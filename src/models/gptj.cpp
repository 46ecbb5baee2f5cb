#include "models/gptj.h"

#include <ATen/ATen.h>

#include <cmath>

#include "models/attention.h"
#include "models/checkpoint.h"
#include "models/seq_cls_head.h"
#include "models/config_reader.h"
#include "models/model_config.h"

namespace peft {

namespace {

// Rotates the first rotary_dim features of x [b, h, s, d]; the rest pass through.
at::Tensor apply_rotary(const at::Tensor& x, const GPTJAngles& a) {
  const int64_t rot = a.cos.size(-1);
  auto x_rot = x.narrow(-1, 0, rot);
  auto rotated = x_rot * a.cos + rotate_every_two(x_rot) * a.sin;
  return rot == x.size(-1) ? rotated : at::cat({rotated, x.narrow(-1, rot, x.size(-1) - rot)}, -1);
}

}  // namespace

GPTJConfig GPTJConfig::from_json(const nlohmann::json& j, const std::string& where) {
  ConfigReader r(j, where);
  GPTJConfig c;
  c.vocab_size = r.dim("vocab_size", 50400, ConfigLimits::kVocab);
  c.n_positions = r.dim("n_positions", 2048, ConfigLimits::kPositions);
  c.n_embd = r.dim("n_embd", 4096, ConfigLimits::kWidth);
  c.n_layer = r.dim("n_layer", 28, ConfigLimits::kLayers);
  c.n_head = r.dim("n_head", 16, ConfigLimits::kHeads);
  c.n_inner = r.dim("n_inner", 4 * c.n_embd, ConfigLimits::kWidth);
  c.layer_norm_epsilon = r.positive("layer_norm_epsilon", 1e-5);
  c.activation_function = r.get<std::string>("activation_function", "gelu_new");
  check_activation(c.activation_function);
  c.tie_word_embeddings = r.get<bool>("tie_word_embeddings", false);
  if (c.n_embd % c.n_head != 0) r.fail("n_embd is not a multiple of n_head");
  // transformers rotates whole rows of heads without rotary_dim, which only fits one head.
  if (!r.has("rotary_dim")) r.fail("rotary_dim is required (GPT-J rotates the first rotary_dim features of each head)");
  c.rotary_dim = r.dim("rotary_dim", std::nullopt, c.n_embd / c.n_head);
  if (c.rotary_dim % 2 != 0) r.fail("rotary_dim must be even");
  return c;
}

GPTJAttention::GPTJAttention(const GPTJConfig& c) : heads_(c.n_head), head_dim_(c.n_embd / c.n_head) {
  k_proj = register_module("k_proj", std::make_shared<Linear>(c.n_embd, c.n_embd, false));
  v_proj = register_module("v_proj", std::make_shared<Linear>(c.n_embd, c.n_embd, false));
  q_proj = register_module("q_proj", std::make_shared<Linear>(c.n_embd, c.n_embd, false));
  out_proj = register_module("out_proj", std::make_shared<Linear>(c.n_embd, c.n_embd, false));
}

at::Tensor GPTJAttention::forward(const at::Tensor& h, const GPTJAngles& rope, const at::Tensor& mask,
                                  KVCache* cache, size_t layer) {
  auto q = apply_rotary(split_heads(q_proj->forward(h), heads_, head_dim_), rope);
  auto k = apply_rotary(split_heads(k_proj->forward(h), heads_, head_dim_), rope);
  auto v = split_heads(v_proj->forward(h), heads_, head_dim_);
  update_cache(cache, layer, k, v);
  return out_proj->forward(attend(q, k, v, mask, 1.0 / std::sqrt(static_cast<double>(head_dim_)), /*is_causal=*/true));
}

GPTJMLP::GPTJMLP(const GPTJConfig& c) : act_(c.activation_function) {
  fc_in = register_module("fc_in", std::make_shared<Linear>(c.n_embd, c.n_inner, true));
  fc_out = register_module("fc_out", std::make_shared<Linear>(c.n_inner, c.n_embd, true));
}

at::Tensor GPTJMLP::base_forward(const at::Tensor& x) { return fc_out->forward(activation(act_, fc_in->forward(x))); }

GPTJBlock::GPTJBlock(const GPTJConfig& c) {
  ln_1 = register_module("ln_1", std::make_shared<LayerNorm>(c.n_embd, c.layer_norm_epsilon));
  attn = register_module("attn", std::make_shared<GPTJAttention>(c));
  mlp = register_module("mlp", std::make_shared<GPTJMLP>(c));
}

at::Tensor GPTJBlock::forward(const at::Tensor& h, const GPTJAngles& rope, const at::Tensor& mask, KVCache* cache,
                              size_t layer) {
  auto x = ln_1->forward(h);
  return attn->forward(x, rope, mask, cache, layer) + mlp->forward(x) + h;  // transformers' order
}

GPTJModel::GPTJModel(const GPTJConfig& c) {
  // As create_sinusoidal_positions: int64 arange over the rotary dims, divided in float32.
  inv_freq_ = 1.0 / at::pow(10000.0, at::arange(0, c.rotary_dim, 2, at::kLong).to(at::kFloat) / c.rotary_dim);
  wte = register_module("wte", std::make_shared<Embedding>(c.vocab_size, c.n_embd));
  h = register_module("h", std::make_shared<ModuleList<GPTJBlock>>());
  for (int64_t i = 0; i < c.n_layer; ++i) h->push_back(std::make_shared<GPTJBlock>(c));
  ln_f = register_module("ln_f", std::make_shared<LayerNorm>(c.n_embd, c.layer_norm_epsilon));
}

at::Tensor GPTJModel::forward(const ModelInputs& in) {
  auto x = in.inputs_embeds.defined() ? in.inputs_embeds : wte->forward(in.input_ids);
  const auto step = begin_decoder_step(in, h->size(), x.device());
  // Each frequency serves a pair of neighbouring features: [b, 1, s, rotary_dim].
  auto freqs = step.positions.to(x.device()).to(at::kFloat).unsqueeze(-1) * inv_freq_.to(x.device());
  const GPTJAngles rope{freqs.cos().repeat_interleave(2, -1).unsqueeze(1).to(x.scalar_type()),
                        freqs.sin().repeat_interleave(2, -1).unsqueeze(1).to(x.scalar_type())};
  x = run_decoder_blocks(h->size(), x, in, [this, rope, mask = step.mask](size_t i, const at::Tensor& t, KVCache* c) {
    return (*h)[i].forward(t, rope, mask, c, i);
  });
  return ln_f->forward(x);
}

GPTJForCausalLM::GPTJForCausalLM(const nlohmann::json& j, const std::string& where)
    : GPTJForCausalLM(j, GPTJConfig::from_json(j, where)) {}

GPTJForCausalLM::GPTJForCausalLM(const nlohmann::json& j, GPTJConfig cfg)
    : CausalLMBase(j, cfg.tie_word_embeddings), cfg_(std::move(cfg)) {
  transformer = register_module("transformer", std::make_shared<GPTJModel>(cfg_));
  add_lm_head(cfg_.n_embd, cfg_.vocab_size, /*bias=*/true);
}

std::shared_ptr<Model> make_gptj_classifier(const nlohmann::json& j, const std::string& where) {
  auto c = GPTJConfig::from_json(j, where);
  return std::make_shared<DecoderForSequenceClassification<GPTJModel>>(j, where, "GPTJForSequenceClassification", "transformer",
                                                                     std::make_shared<GPTJModel>(c), c.n_embd,
                                                                     c.n_layer, c.n_positions);
}

}  // namespace peft
