#include "models/moe.h"

#include <ATen/ATen.h>

#include "models/checkpoint.h"
#include "models/config_reader.h"

namespace peft {

MoeConfig MoeConfig::from_json(const nlohmann::json& j, const std::string& arch, const std::string& where) {
  ConfigReader r(j, where);
  MoeConfig c;
  const bool mixtral = arch == "Mixtral";
  static_cast<LlamaConfig&>(c) = LlamaConfig::from_json(j, arch, where);
  c.qk_norm = !mixtral;  // Qwen3Moe: Qwen3's q_norm / k_norm
  // Qwen3MoeConfig saves num_experts as num_local_experts (its attribute_map); read either.
  const char* experts_key = mixtral || !r.has("num_experts") ? "num_local_experts" : "num_experts";
  c.num_experts = r.dim(experts_key, 8, ConfigLimits::kHeads);
  c.top_k = r.dim("num_experts_per_tok", mixtral ? 2 : 8, ConfigLimits::kHeads);
  if (c.top_k > c.num_experts)
    r.fail("num_experts_per_tok " + std::to_string(c.top_k) + " exceeds the " + std::to_string(c.num_experts) +
           " experts");
  c.moe_intermediate_size = mixtral ? c.intermediate_size : r.dim("moe_intermediate_size", 768, ConfigLimits::kWidth);
  c.norm_topk_prob = mixtral || r.get<bool>("norm_topk_prob", false);
  c.experts_first = !mixtral;
  // Qwen3Moe: layers in mlp_only_layers, and those off the decoder_sparse_step grid, are dense.
  const int64_t step = mixtral ? 1 : r.dim("decoder_sparse_step", 1, ConfigLimits::kLayers);
  c.sparse.assign(static_cast<size_t>(c.num_layers), true);
  for (int64_t i = 0; i < c.num_layers; ++i) c.sparse[i] = (i + 1) % step == 0;
  if (!mixtral && r.has("mlp_only_layers")) {
    if (!j["mlp_only_layers"].is_array()) r.fail("'mlp_only_layers' must be a list of layer indices");
    for (const auto& v : j["mlp_only_layers"]) {
      const int64_t i = strict_get<int64_t>(v, where + ": mlp_only_layers");
      if (i >= 0 && i < c.num_layers) c.sparse[i] = false;
    }
  }
  // Training-time options of transformers that we do not reproduce: refused by name
  // rather than silently computing another loss or forward.
  if (r.get<double>("router_jitter_noise", 0.0) != 0.0) r.fail("router_jitter_noise != 0 is not supported");
  if (r.get<bool>("output_router_logits", false))
    r.fail("output_router_logits = true (the router load-balancing loss in the training loss) is not supported");
  // One sliding_window, when set, for every layer (Mixtral as Mistral; Qwen3Moe only
  // with use_sliding_window, as its config drops the window otherwise).
  const bool windowed = mixtral ? r.has("sliding_window") : r.get<bool>("use_sliding_window", false);
  const int64_t window = windowed ? r.dim("sliding_window", 4096, ConfigLimits::kPositions) : 0;
  c.sliding_window = window;
  c.sliding.assign(static_cast<size_t>(c.num_layers), window > 0);
  return c;
}

MoeTopKRouter::MoeTopKRouter(const MoeConfig& c) : arch_(c.arch), top_k_(c.top_k), norm_(c.norm_topk_prob) {
  register_parameter("weight", &weight, {c.num_experts, c.hidden_size});
}

std::pair<at::Tensor, at::Tensor> MoeTopKRouter::forward(const at::Tensor& x) {
  // As transformers: softmax in float32, top-k of the probabilities, renormalized
  // (Mixtral; Qwen3Moe with norm_topk_prob); Qwen3Moe casts them to the logits' dtype.
  const auto logits = at::linear(x, weight);
  auto probs = at::softmax(logits.to(at::kFloat), -1);
  auto [top, index] = at::topk(probs, top_k_, -1);
  if (norm_) top = top / top.sum(-1, /*keepdim=*/true);
  if (arch_ != "Mixtral") top = top.to(logits.scalar_type());
  return {top, index};
}

MoeExperts::MoeExperts(const MoeConfig& c)
    : arch_(c.arch), experts_(c.num_experts), hidden_(c.hidden_size), intermediate_(c.moe_intermediate_size),
      act_(c.hidden_act) {
  register_parameter("gate_up_proj", &gate_up_proj, {experts_, 2 * intermediate_, hidden_});
  register_parameter("down_proj", &down_proj, {experts_, hidden_, intermediate_});
}

at::Tensor MoeExperts::base_forward(const at::Tensor&) {
  throw std::logic_error(type_name() + " runs with its routing (forward(x, index, weights))");
}

at::Tensor MoeExperts::forward(const at::Tensor& x, const at::Tensor& top_k_index,
                                   const at::Tensor& top_k_weights) {
  const int64_t k = top_k_index.size(1);
  auto out = at::zeros_like(x);
  // Assignments (token, slot) sorted by expert; expert e owns a contiguous run of them.
  const auto flat = top_k_index.reshape({-1});
  const auto order = std::get<1>(at::sort(flat, /*stable=*/true, /*dim=*/0, /*descending=*/false));
  const auto counts = at::bincount(flat, {}, experts_).to(at::kCPU);
  const auto flat_weights = top_k_weights.reshape({-1});
  const int64_t* count = counts.data_ptr<int64_t>();
  int64_t start = 0;
  for (int64_t e = 0; e < experts_; ++e) {
    if (count[e] == 0) continue;
    const auto rows = order.narrow(0, start, count[e]);
    start += count[e];
    const auto tokens = at::floor_divide(rows, k);
    const auto xe = x.index_select(0, tokens);
    const auto gate_up = param_linear("gate_up_proj", e, xe).chunk(2, -1);
    auto y = param_linear("down_proj", e, activation(act_, gate_up[0]) * gate_up[1]);
    y = y * flat_weights.index_select(0, rows).unsqueeze(-1);
    out.index_add_(0, tokens, y.to(out.scalar_type()));
  }
  return out;
}

MoeSparseBlock::MoeSparseBlock(const MoeConfig& c) : arch_(c.arch) {
  // transformers' registration order, which decides the order of the parameters.
  if (c.experts_first) experts = register_module("experts", std::make_shared<MoeExperts>(c));
  gate = register_module("gate", std::make_shared<MoeTopKRouter>(c));
  if (!c.experts_first) experts = register_module("experts", std::make_shared<MoeExperts>(c));
}

at::Tensor MoeSparseBlock::forward(const at::Tensor& h) {
  const auto x = h.reshape({-1, h.size(-1)});
  auto [weights, index] = gate->forward(x);
  return experts->forward(x, index, weights).view(h.sizes());
}

MoeDecoderLayer::MoeDecoderLayer(const MoeConfig& c, bool sparse) : arch_(c.arch) {
  const std::string norm = c.arch + "RMSNorm";
  self_attn = register_module("self_attn", std::make_shared<LlamaAttention>(c));
  if (sparse) mlp = register_module("mlp", std::make_shared<MoeSparseBlock>(c));
  else dense_mlp = register_module("mlp", std::make_shared<LlamaMLP>(c));
  input_layernorm = register_module("input_layernorm", std::make_shared<RMSNorm>(c.hidden_size, c.rms_norm_eps, norm));
  post_attention_layernorm =
      register_module("post_attention_layernorm", std::make_shared<RMSNorm>(c.hidden_size, c.rms_norm_eps, norm));
}

at::Tensor MoeDecoderLayer::forward(const at::Tensor& h, const RotaryEmbedding::Angles& rope, const at::Tensor& mask,
                                    KVCache* cache, size_t layer) {
  auto x = h + self_attn->forward(input_layernorm->forward(h), rope, mask, cache, layer);
  const auto y = post_attention_layernorm->forward(x);
  return x + (mlp ? mlp->forward(y) : dense_mlp->forward(y));
}

MoeModel::MoeModel(const MoeConfig& c)
    : arch_(c.arch), rope_(c.rope, c.head_dim, c.max_position_embeddings), sliding_window_(c.sliding_window) {
  embed_tokens = register_module("embed_tokens", std::make_shared<Embedding>(c.vocab_size, c.hidden_size));
  layers = register_module("layers", std::make_shared<ModuleList<MoeDecoderLayer>>());
  for (int64_t i = 0; i < c.num_layers; ++i) layers->push_back(std::make_shared<MoeDecoderLayer>(c, c.sparse[i]));
  norm = register_module("norm", std::make_shared<RMSNorm>(c.hidden_size, c.rms_norm_eps, c.arch + "RMSNorm"));
}

at::Tensor MoeModel::forward(const ModelInputs& in) {
  auto h = in.inputs_embeds.defined() ? in.inputs_embeds : embed_tokens->forward(in.input_ids);
  KVCache* cache = in.cache;
  auto step = begin_decoder_step(in, layers->size(), h.device());
  const auto mask = sliding_window_ > 0 ? step.window_mask(in, sliding_window_, h.device()) : step.mask;
  const auto angles = rope_.angles(step.positions, h.scalar_type(), h.device());
  for (size_t i = 0; i < layers->size(); ++i) {
    auto& layer = (*layers)[i];
    if (in.checkpoint_layers && !cache)
      h = checkpointed(
          [&layer, angles, mask, i](const at::Tensor& x) { return layer.forward(x, angles, mask, nullptr, i); }, h);
    else
      h = layer.forward(h, angles, mask, cache, i);
  }
  return norm->forward(h);
}

MoeForCausalLM::MoeForCausalLM(const nlohmann::json& j, const std::string& arch, const std::string& where)
    : MoeForCausalLM(j, MoeConfig::from_json(j, arch, where)) {}

MoeForCausalLM::MoeForCausalLM(const nlohmann::json& j, MoeConfig cfg)
    : CausalLMBase(j, cfg.tie_word_embeddings), cfg_(std::move(cfg)) {
  model = register_module("model", std::make_shared<MoeModel>(cfg_));
  add_lm_head(cfg_.hidden_size, cfg_.vocab_size);
}

}  // namespace peft
