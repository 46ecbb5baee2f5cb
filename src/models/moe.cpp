#include "models/moe.h"

#include <ATen/ATen.h>

#include <cmath>

#include "models/checkpoint.h"
#include "models/config_reader.h"

namespace peft {

MoeConfig MoeConfig::from_json(const nlohmann::json& j, const std::string& arch, const std::string& where) {
  ConfigReader r(j, where);
  MoeConfig c;
  const bool mixtral = arch == "Mixtral", qwen2 = arch == "Qwen2Moe";
  static_cast<LlamaConfig&>(c) = LlamaConfig::from_json(j, arch, where);
  c.qk_norm = arch == "Qwen3Moe";  // Qwen3's q_norm / k_norm
  if (qwen2) {  // Qwen2MoeConfig: q/k/v bias unless qkv_bias is false; o_proj and MLPs none
    c.qkv_bias = r.get<bool>("qkv_bias", true);
    c.o_bias = c.mlp_bias = false;
    c.shared_expert_intermediate_size = r.dim("shared_expert_intermediate_size", 5632, ConfigLimits::kWidth);
  }
  // Mixtral's and Qwen3MoeConfig's attribute_map save num_experts as num_local_experts;
  // Qwen2MoeConfig has num_experts itself. Read either.
  const char* experts_key = qwen2 || (!mixtral && r.has("num_experts")) ? "num_experts" : "num_local_experts";
  c.num_experts = r.dim(experts_key, qwen2 ? 60 : 8, ConfigLimits::kHeads);
  c.top_k = r.dim("num_experts_per_tok", mixtral ? 2 : qwen2 ? 4 : 8, ConfigLimits::kHeads);
  if (c.top_k > c.num_experts)
    r.fail("num_experts_per_tok " + std::to_string(c.top_k) + " exceeds the " + std::to_string(c.num_experts) +
           " experts");
  c.moe_intermediate_size =
      mixtral ? c.intermediate_size : r.dim("moe_intermediate_size", qwen2 ? 1408 : 768, ConfigLimits::kWidth);
  c.norm_topk_prob = mixtral || r.get<bool>("norm_topk_prob", false);
  c.experts_first = arch == "Qwen3Moe";
  // Qwen2Moe / Qwen3Moe: layers in mlp_only_layers, and those off the decoder_sparse_step grid, are dense.
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
  // Training-time noise of transformers that we do not reproduce: refused by name rather
  // than silently computing another forward.
  if (r.get<double>("router_jitter_noise", 0.0) != 0.0) r.fail("router_jitter_noise != 0 is not supported");
  c.output_router_logits = r.get<bool>("output_router_logits", false);
  c.router_aux_loss_coef = r.get<double>("router_aux_loss_coef", 0.001);
  if (!std::isfinite(c.router_aux_loss_coef)) r.fail("'router_aux_loss_coef' must be a finite number");
  // Qwen2MoeConfig's windows alternate by layer_types (sliding on even layers below
  // max_window_layers); not reproduced, so refused.
  if (qwen2 && r.get<bool>("use_sliding_window", false)) r.fail("use_sliding_window is not supported");
  // One sliding_window, when set, for every layer (Mixtral as Mistral; Qwen3Moe only
  // with use_sliding_window, as its config drops the window otherwise).
  const bool windowed = mixtral ? r.has("sliding_window") : !qwen2 && r.get<bool>("use_sliding_window", false);
  const int64_t window = windowed ? r.dim("sliding_window", 4096, ConfigLimits::kPositions) : 0;
  c.sliding_window = window;
  c.sliding.assign(static_cast<size_t>(c.num_layers), window > 0);
  return c;
}

MoeTopKRouter::MoeTopKRouter(const MoeConfig& c) : arch_(c.arch), top_k_(c.top_k), norm_(c.norm_topk_prob) {
  register_parameter("weight", &weight, {c.num_experts, c.hidden_size});
}

std::pair<at::Tensor, at::Tensor> MoeTopKRouter::forward(const at::Tensor& x, at::Tensor* logits_out) {
  // As transformers: softmax in float32, top-k of the probabilities, renormalized
  // (Mixtral; the Qwen ones with norm_topk_prob); the Qwen ones cast them to the logits' dtype.
  const auto logits = at::linear(x, weight);
  if (logits_out) *logits_out = logits;
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
  if (c.shared_expert_intermediate_size > 0) {
    LlamaConfig shared = c;
    shared.intermediate_size = c.shared_expert_intermediate_size;
    shared_expert = register_module("shared_expert", std::make_shared<LlamaMLP>(shared));
    shared_expert_gate = register_module("shared_expert_gate", std::make_shared<Linear>(c.hidden_size, 1, false));
  }
}

at::Tensor MoeSparseBlock::forward(const at::Tensor& h, std::vector<at::Tensor>* router_logits) {
  const auto x = h.reshape({-1, h.size(-1)});
  at::Tensor logits;
  auto [weights, index] = gate->forward(x, router_logits ? &logits : nullptr);
  if (router_logits) router_logits->push_back(logits);
  auto out = experts->forward(x, index, weights);
  if (shared_expert) out = out + at::sigmoid(shared_expert_gate->forward(x)) * shared_expert->forward(x);
  return out.view(h.sizes());
}

namespace {
// transformers' load_balancing_loss_func: num_experts * sum_e f_e * P_e over all layers'
// tokens, f_e the share of top-k assignments to expert e per token, P_e its mean router
// probability (softmax in the logits' dtype); with a mask, padding counts in neither.
at::Tensor load_balancing_loss(const std::vector<at::Tensor>& logits, int64_t experts, int64_t top_k,
                               const at::Tensor& mask) {
  const auto opts = logits[0].options().dtype(at::kFloat);
  at::Tensor assigned = at::zeros({experts}, opts), prob = at::zeros({experts}, opts), rows = at::zeros({}, opts);
  const at::Tensor flat_mask = mask.defined() ? mask.reshape({-1}).to(opts) : at::Tensor();
  for (const auto& layer : logits) {
    const auto weights = at::softmax(layer, -1);
    const auto selected = std::get<1>(at::topk(weights, top_k, -1)).reshape({-1});
    if (!flat_mask.defined()) {
      assigned = assigned + at::bincount(selected, {}, experts).to(at::kFloat);
      prob = prob + weights.to(at::kFloat).sum(0);
      rows = rows + static_cast<double>(weights.size(0));
    } else {
      assigned = assigned + at::zeros({experts}, opts).scatter_add(0, selected, flat_mask.repeat_interleave(top_k));
      prob = prob + (weights.to(at::kFloat) * flat_mask.unsqueeze(-1)).sum(0);
      rows = rows + flat_mask.sum();
    }
  }
  return (assigned / rows * (prob / rows)).sum() * static_cast<double>(experts);
}
}  // namespace

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
                                    KVCache* cache, size_t layer, std::vector<at::Tensor>* router_logits) {
  auto x = h + self_attn->forward(input_layernorm->forward(h), rope, mask, cache, layer);
  const auto y = post_attention_layernorm->forward(x);
  return x + (mlp ? mlp->forward(y, router_logits) : dense_mlp->forward(y));
}

MoeModel::MoeModel(const MoeConfig& c)
    : arch_(c.arch), rope_(c.rope, c.head_dim, c.max_position_embeddings), sliding_window_(c.sliding_window),
      router_logits_(c.output_router_logits), experts_(c.num_experts), top_k_(c.top_k) {
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
  // The router loss of a forward over whole sequences (not a generation step).
  router_loss_ = at::Tensor();
  const bool collect = router_logits_ && !cache;
  if (collect && in.checkpoint_layers)
    throw std::invalid_argument(
        "output_router_logits cannot be combined with gradient_checkpointing: the recomputed layers would lose "
        "the router load-balancing loss");
  std::vector<at::Tensor> router_logits;
  for (size_t i = 0; i < layers->size(); ++i) {
    auto& layer = (*layers)[i];
    if (in.checkpoint_layers && !cache)
      h = checkpointed(
          [&layer, angles, mask, i](const at::Tensor& x) { return layer.forward(x, angles, mask, nullptr, i); }, h);
    else
      h = layer.forward(h, angles, mask, cache, i, collect ? &router_logits : nullptr);
  }
  if (!router_logits.empty()) {
    // transformers flattens the mask to the router's rows; a mask of another shape (none
    // here without a cache) would not line up, so it is only used when it does.
    const auto& m = in.attention_mask;
    const bool rows_match = m.defined() && m.dim() == 2 && m.numel() == router_logits[0].size(0);
    router_loss_ = load_balancing_loss(router_logits, experts_, top_k_, rows_match ? m.to(h.device()) : at::Tensor());
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

at::Tensor MoeForCausalLM::aux_loss() const {
  const auto& loss = model->router_loss();
  return loss.defined() ? loss * cfg_.router_aux_loss_coef : loss;
}

}  // namespace peft
