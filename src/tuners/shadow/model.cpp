// SHADOW: the mirror backbone, the per-block networks and the hooks that carry the shadow
// state through the base decoder (include/peft/shadow.h).
#include <ATen/ATen.h>
#include <c10/util/irange.h>

#include <cmath>
#include <stdexcept>

#include "models/gpt2.h"
#include "models/llama.h"
#include "models/model_config.h"
#include "tuners/init_draws.h"
#include "tuners/shadow/shadow_blocks.h"
#include "tuners/target_match.h"

namespace peft {

namespace shadow {

std::vector<BlockRef> decoder_blocks(Model& model) {
  std::vector<BlockRef> out;
  if (auto* l = dynamic_cast<LlamaForCausalLM*>(&model)) {
    for (size_t i = 0; i < l->model->layers->size(); ++i)
      out.push_back({"model.layers." + std::to_string(i), static_cast<int64_t>(i)});
  } else if (auto* g = dynamic_cast<GPT2LMHeadModel*>(&model)) {
    for (size_t i = 0; i < g->transformer->h->size(); ++i)
      out.push_back({"transformer.h." + std::to_string(i), static_cast<int64_t>(i)});
  } else {
    throw std::invalid_argument(
        "SHADOW: base model " + model.type_name() +
        " is not supported; ShadowPEFT adapts causal LMs of the Llama family (Llama, Mistral, Qwen2, Qwen3 "
        "*ForCausalLM) and GPT2LMHeadModel (HF's Diffusers backends for diffusion transformers are not ported)");
  }
  return out;
}

}  // namespace shadow

namespace {

at::TensorOptions f32() { return at::TensorOptions(at::kFloat); }

bool has_slot(const Module& m, const char* name) {
  for (const auto& s : m.slots())
    if (s.name == name) return true;
  return false;
}

// nn.Linear's reset_parameters: kaiming_uniform_(a=√5) on the weight, U(±1/√in) on the bias.
void torch_linear_init(Linear& l, at::Generator& gen) {
  l.weight = kaiming_uniform_sqrt5(l.out_features, l.in_features, gen);
  if (has_slot(l, "bias")) {
    const double b = 1.0 / std::sqrt(static_cast<double>(l.in_features));
    l.bias = at::empty({l.out_features}, f32()).uniform_(-b, b, gen);
  }
}

// What the modules' constructors draw, in construction (pre-)order: torch's defaults for
// nn.Embedding (N(0, 1), padding row zeroed) and nn.Linear; transformers' Conv1D
// (bias zeros, weight N(0, 0.02²)); norms ones / zeros.
void construction_draws(Module& root, at::Generator& gen, std::optional<int64_t> padding_idx) {
  for (auto& [_, m] : root.named_modules()) {
    if (auto* e = dynamic_cast<Embedding*>(m)) {
      e->weight = at::empty({e->num_embeddings, e->embedding_dim}, f32()).normal_(0.0, 1.0, gen);
      if (padding_idx && *padding_idx >= 0 && *padding_idx < e->num_embeddings) e->weight[*padding_idx].zero_();
    } else if (auto* l = dynamic_cast<Linear*>(m)) {
      torch_linear_init(*l, gen);
    } else if (auto* c = dynamic_cast<Conv1D*>(m)) {
      c->bias = at::zeros({c->out_features}, f32());
      c->weight = at::empty({c->in_features, c->out_features}, f32()).normal_(0.0, 0.02, gen);
    } else if (auto* n = dynamic_cast<RMSNorm*>(m)) {
      n->weight = at::ones({n->dim}, f32());
    } else if (auto* n = dynamic_cast<LayerNorm*>(m)) {
      n->weight = at::ones({n->dim}, f32());
      if (has_slot(*n, "bias")) n->bias = at::zeros({n->dim}, f32());
    }
  }
}

struct HfInit {
  at::Generator* gen;
  double std;
  double gpt2_residual_std;  // GPT-2: c_proj of attention and MLP, std / √(2 n_layer)
  std::optional<int64_t> padding_idx;
};

// transformers' post_init: _init_weights over the modules children-first (smart_apply).
void hf_init_weights(Module& m, const HfInit& h) {
  for (auto& [_, child] : m.children()) hf_init_weights(*child, h);
  at::Generator& gen = *h.gen;
  if (auto* l = dynamic_cast<Linear*>(&m)) {
    l->weight.normal_(0.0, h.std, gen);
    if (l->bias.defined()) l->bias.zero_();
  } else if (auto* e = dynamic_cast<Embedding*>(&m)) {
    e->weight.normal_(0.0, h.std, gen);
    if (h.padding_idx && *h.padding_idx >= 0 && *h.padding_idx < e->num_embeddings) e->weight[*h.padding_idx].zero_();
  } else if (auto* c = dynamic_cast<Conv1D*>(&m)) {
    c->weight.normal_(0.0, h.std, gen);
    c->bias.zero_();
  } else if (auto* n = dynamic_cast<RMSNorm*>(&m)) {
    n->weight.fill_(1.0);
  } else if (auto* n = dynamic_cast<LayerNorm*>(&m)) {
    n->weight.fill_(1.0);
    if (has_slot(*n, "bias")) n->bias.zero_();
  } else if (auto* a = dynamic_cast<GPT2Attention*>(&m)) {
    a->c_proj->weight.normal_(0.0, h.gpt2_residual_std, gen);
  } else if (auto* p = dynamic_cast<GPT2MLP*>(&m)) {
    p->c_proj->weight.normal_(0.0, h.gpt2_residual_std, gen);
  }
}

std::optional<int64_t> json_int(const nlohmann::json& j, const char* key) {
  if (j.contains(key) && j[key].is_number_integer()) return j[key].get<int64_t>();
  return std::nullopt;
}

double initializer_range(const nlohmann::json& j) {
  if (j.contains("initializer_range") && j["initializer_range"].is_number()) {
    const double v = j["initializer_range"].get<double>();
    if (v != 0.0) return v;  // transformers: `initializer_range or 0.02`
  }
  return 0.02;
}

}  // namespace

// ---------------------------------------------------------------------------- backbone

ShadowBackbone::ShadowBackbone(Model& base, const ShadowConfig& c, at::Generator& gen) {
  const auto& j = base.config();
  const int64_t layers = c.shadow_num_hidden_layers.value_or(1);
  const int64_t base_hidden = base.input_embeddings() ? base.input_embeddings()->embedding_dim : 0;
  HfInit init{&gen, initializer_range(j), 0.0, std::nullopt};
  if (auto* l = dynamic_cast<LlamaForCausalLM*>(&base)) {
    const std::string type = l->type_name();
    const std::string arch = type.substr(0, type.size() - std::string("ForCausalLM").size());
    // HF deep-copies the body's config and sets the overrides; head_dim stays the base's.
    LlamaConfig cfg = LlamaConfig::from_json(j, arch, "config.json");
    cfg.num_layers = layers;
    if (c.shadow_hidden_size) cfg.hidden_size = *c.shadow_hidden_size;
    if (c.shadow_intermediate_size) cfg.intermediate_size = *c.shadow_intermediate_size;
    if (c.shadow_num_attention_heads) cfg.num_heads = *c.shadow_num_attention_heads;
    // transformers' layer_types cut or padded with the last to the new depth.
    if (!cfg.sliding.empty()) {
      const bool last = cfg.sliding.back();
      cfg.sliding.resize(static_cast<size_t>(layers), last);
    } else {
      cfg.sliding.assign(static_cast<size_t>(layers), false);
    }
    llama_ = std::make_shared<LlamaModel>(cfg);
    type_ = llama_->type_name();
    hidden_ = cfg.hidden_size;
    init.padding_idx = json_int(j, "pad_token_id");
    construction_draws(*llama_, gen, init.padding_idx);
    hf_init_weights(*llama_, init);
    // HF drives a same-width mirror with the base's embeddings and deletes its table.
    can_share_ = c.share_embeddings && hidden_ == base_hidden;
    if (!can_share_) register_module("embed_tokens", llama_->embed_tokens);
    else llama_->embed_tokens->weight = at::Tensor();
    register_module("layers", llama_->layers);
    register_module("norm", llama_->norm);
  } else if (dynamic_cast<GPT2LMHeadModel*>(&base)) {
    GPT2Config cfg = GPT2Config::from_json(j, "config.json");
    cfg.n_layer = layers;
    if (c.shadow_hidden_size) cfg.n_embd = *c.shadow_hidden_size;
    if (c.shadow_num_attention_heads) cfg.n_head = *c.shadow_num_attention_heads;
    if (c.shadow_intermediate_size)
      cfg.n_inner = *c.shadow_intermediate_size;
    else if (!j.contains("n_inner") || j["n_inner"].is_null())
      cfg.n_inner = 4 * cfg.n_embd;  // GPT2MLP's default, of the mirror's width
    gpt2_ = std::make_shared<GPT2Model>(cfg);
    type_ = gpt2_->type_name();
    hidden_ = cfg.n_embd;
    init.gpt2_residual_std = init.std / std::sqrt(2.0 * static_cast<double>(cfg.n_layer));
    construction_draws(*gpt2_, gen, std::nullopt);
    hf_init_weights(*gpt2_, init);
    // GPT2Model has no `embed_tokens`, so HF keeps (and trains, and saves) its wte even
    // when it feeds the backbone the base's embeddings.
    can_share_ = c.share_embeddings && hidden_ == base_hidden;
    register_module("wte", gpt2_->wte);
    register_module("wpe", gpt2_->wpe);
    register_module("h", gpt2_->h);
    register_module("ln_f", gpt2_->ln_f);
  } else {
    (void)shadow::decoder_blocks(base);  // throws naming the model
  }
}

at::Tensor ShadowBackbone::forward(const ModelInputs& in) {
  if (llama_) return llama_->forward(in);
  return gpt2_->forward(in);
}

// ---------------------------------------------------------------------------- blocks

ShadowBlock::ShadowBlock(int64_t d, const ShadowConfig& c, at::Generator& gen) {
  const int64_t u = c.update_hidden_size.value_or(c.r);
  down = register_module("shadow_down.default", std::make_shared<Linear>(d, c.r, false));
  up = register_module("shadow_up.default", std::make_shared<Linear>(c.r, d, false));
  t0 = register_module("shadow_update_transform.default.0", std::make_shared<Linear>(d, u, true));
  t2 = register_module("shadow_update_transform.default.2", std::make_shared<Linear>(u, d, true));
  g0 = register_module("shadow_update_gate.default.0", std::make_shared<Linear>(d, u, true));
  g2 = register_module("shadow_update_gate.default.2", std::make_shared<Linear>(u, d, true));
  // HF's update_layer order: W_down, W_up (zeroed after its draw), T, G.
  torch_linear_init(*down, gen);
  torch_linear_init(*up, gen);
  if (c.init_weights) up->weight.zero_();
  for (auto* l : {t0.get(), t2.get(), g0.get(), g2.get()}) torch_linear_init(*l, gen);
}

at::Tensor ShadowBlock::inject(const at::Tensor& h, const at::Tensor& s, double alpha, double dropout,
                               bool training) const {
  auto delta = (h - s).to(down->weight.scalar_type());
  if (dropout > 0.0 && training) delta = at::dropout(delta, dropout, true);
  delta = at::linear(at::linear(delta, down->weight), up->weight);
  return h + (delta * alpha).to(h.scalar_type());
}

at::Tensor ShadowBlock::update(const at::Tensor& o, const at::Tensor& s) const {
  const auto dt = t0->weight.scalar_type();
  const auto x = o.to(dt);
  const auto candidate = at::linear(at::gelu(at::linear(x, t0->weight, t0->bias)), t2->weight, t2->bias);
  const auto gate = at::sigmoid(at::linear(at::gelu(at::linear(x, g0->weight, g0->bias)), g2->weight, g2->bias));
  return ((1.0 - gate) * s.to(dt) + gate * candidate).to(s.scalar_type());
}

// ---------------------------------------------------------------------------- adapter

ShadowAdapter::ShadowAdapter(Model& model, const ShadowConfig& c, at::Generator& gen)
    : alpha_(c.shadow_alpha), dropout_(c.shadow_dropout), aux_weight_(c.auxiliary_loss_weight) {
  const auto blocks = shadow::decoder_blocks(model);
  std::vector<const shadow::BlockRef*> adapted;
  for (const auto& b : blocks)
    if (is_target(c.targets, b.path)) adapted.push_back(&b);
  if (adapted.empty())
    throw std::invalid_argument("SHADOW: target_modules match no decoder block of " + model.type_name() + " (its blocks are '" +
                                blocks.front().path + "' ... '" + blocks.back().path + "')");
  for (size_t k = 1; k < adapted.size(); ++k)
    if (adapted[k]->index != adapted[k - 1]->index + 1)
      throw std::invalid_argument("SHADOW: the adapted blocks must be contiguous (the shadow state rides the decoder "
                                  "loop from the first to the last), but '" + adapted[k - 1]->path + "' is followed by '" +
                                  adapted[k]->path + "'");
  first_ = adapted.front()->index;
  last_ = adapted.back()->index;
  base_embedding_ = model.input_embeddings();
  if (!base_embedding_) throw std::invalid_argument("SHADOW: " + model.type_name() + " has no token embedding");
  const int64_t d = base_embedding_->embedding_dim;

  // HF's order of draws: the backbone (at the first target), its projection, then each
  // block's networks in model order.
  backbone_ = register_module("base_model.shadow_backbone.default", std::make_shared<ShadowBackbone>(model, c, gen));
  share_ = backbone_->can_share();
  if (backbone_->hidden_size() != d) {
    auto proj = std::make_shared<Linear>(backbone_->hidden_size(), d, false);
    torch_linear_init(*proj, gen);
    projection_ = register_module("base_model.shadow_projection.default", proj);
  }
  blocks_.resize(blocks.size());
  for (const auto* b : adapted)
    blocks_[static_cast<size_t>(b->index)] =
        register_module("base_model.model." + b->path, std::make_shared<ShadowBlock>(d, c, gen));
  head_ = c.task_type == "CAUSAL_LM" ? model.output_layer() : nullptr;
  to(model.device());
}

ShadowAdapter::~ShadowAdapter() = default;

int64_t ShadowAdapter::prepare(Model&, ModelInputs& in) {
  // s⁰ from the raw inputs, as HF's top-of-model pre-hook computes it.
  ModelInputs b;
  if (share_) {
    if (in.inputs_embeds.defined())
      b.inputs_embeds = in.inputs_embeds;
    else if (in.input_ids.defined())
      b.inputs_embeds = base_embedding_->forward(in.input_ids);
    else
      throw std::invalid_argument("SHADOW: either input_ids or inputs_embeds must be given");
  } else if (in.inputs_embeds.defined()) {
    b.inputs_embeds = in.inputs_embeds;
  } else {
    b.input_ids = in.input_ids;
  }
  // The shadow network keeps its own (float32) dtype; a narrower base (bf16) hands it
  // its embeddings in that dtype (HF casts the shadow modules to the base's dtype instead).
  if (b.inputs_embeds.defined() && b.inputs_embeds.is_floating_point() &&
      b.inputs_embeds.scalar_type() != backbone_->dtype())
    b.inputs_embeds = b.inputs_embeds.to(backbone_->dtype());
  b.attention_mask = in.attention_mask;
  b.position_ids = in.position_ids;
  if (in.cache) {
    // A decode: the backbone keeps its own keys/values beside the base's (HF's ShadowCache).
    b.cache = shadow_cache_.follow(in.cache, "SHADOW: the shadow backbone");
  } else {
    b.checkpoint_layers = in.checkpoint_layers;
  }
  at::Tensor s = backbone_->forward(b);
  if (projection_) {
    auto* p = static_cast<Linear*>(projection_.get());
    s = at::linear(s, p->weight);
  }
  seed_ = s;
  state_ = s;
  in.before_layer = [this](size_t i, const at::Tensor& h) { return inject(i, h); };
  in.after_layer = [this](size_t i, const at::Tensor& h) {
    update(i, h);
    return h;
  };
  return 0;
}

at::Tensor ShadowAdapter::inject(size_t layer, const at::Tensor& h) {
  const auto i = static_cast<int64_t>(layer);
  if (i < first_ || i > last_) return h;
  if (h.sizes().slice(0, h.dim() - 1) != state_.sizes().slice(0, state_.dim() - 1))
    throw std::runtime_error("SHADOW: shadow state shape " + c10::str(state_.sizes()) +
                             " does not match the hidden states " + c10::str(h.sizes()) + " at block " +
                             std::to_string(layer));
  return blocks_[layer]->inject(h, state_, alpha_, dropout_, training);
}

void ShadowAdapter::update(size_t layer, const at::Tensor& out) {
  const auto i = static_cast<int64_t>(layer);
  if (i < first_ || i > last_) return;
  state_ = blocks_[layer]->update(out, state_);
}

std::vector<std::pair<std::string, at::Tensor>> ShadowAdapter::saved_tensors() {
  std::vector<std::pair<std::string, at::Tensor>> out;
  visit_slots([&](const std::string& key, ParamSlot& s) { out.emplace_back(key, *s.tensor); });
  return out;
}

at::Tensor ShadowAdapter::shadow_loss(const at::Tensor& labels) const {
  if (!head_ || !seed_.defined() || !labels.defined() || labels.dim() != 2 || seed_.size(1) < 2) return {};
  const auto logits = head_->forward(seed_);
  const int64_t n = logits.size(1) - 1;
  const auto shift_logits = logits.narrow(1, 0, n).contiguous();
  const auto shift_labels = labels.narrow(1, 1, n).contiguous().to(logits.device());
  return at::cross_entropy_loss(shift_logits.view({-1, shift_logits.size(-1)}), shift_labels.view({-1}), {},
                                at::Reduction::Mean, -100);
}

at::Tensor ShadowAdapter::aux_loss(const at::Tensor& labels) const {
  if (aux_weight_ <= 0.0) return {};
  auto l = shadow_loss(labels);
  return l.defined() ? l * aux_weight_ : l;
}

}  // namespace peft
