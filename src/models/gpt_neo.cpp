#include "models/gpt_neo.h"

#include <ATen/ATen.h>

#include <algorithm>

#include "models/attention.h"
#include "models/checkpoint.h"
#include "models/config_reader.h"
#include "models/model_config.h"
#include "models/seq_cls_head.h"

namespace peft {

namespace {

// attention_types: [[["global", "local"], 12], ...], each list repeated its count times.
std::vector<bool> read_attention_types(const ConfigReader& r, int64_t num_layers) {
  const nlohmann::json types =
      r.has("attention_types") ? r.json()["attention_types"] : nlohmann::json::parse(R"([[["global", "local"], 12]])");
  const std::string shape = "'attention_types' must be a list of [[\"global\" | \"local\", ...], count] pairs";
  if (!types.is_array()) r.fail(shape);
  std::vector<bool> local;
  for (const auto& item : types) {
    if (!item.is_array() || item.size() != 2 || !item[0].is_array() || !item[1].is_number_integer()) r.fail(shape);
    const int64_t count = item[1].get<int64_t>();
    if (count < 0 || count > ConfigLimits::kLayers) r.fail(shape + " (a count out of range)");
    for (int64_t i = 0; i < count; ++i)
      for (const auto& t : item[0]) {
        if (t != "global" && t != "local") r.fail(shape + "; got " + t.dump());
        if (static_cast<int64_t>(local.size()) >= num_layers) r.fail("'attention_types' lists more layers than num_layers");
        local.push_back(t == "local");
      }
  }
  if (static_cast<int64_t>(local.size()) != num_layers)
    r.fail("'attention_types' lists " + std::to_string(local.size()) + " layers but num_layers is " +
           std::to_string(num_layers));
  return local;
}

}  // namespace

GPTNeoConfig GPTNeoConfig::from_json(const nlohmann::json& j, const std::string& where) {
  ConfigReader r(j, where);
  GPTNeoConfig c;
  c.vocab_size = r.dim("vocab_size", 50257, ConfigLimits::kVocab);
  c.max_position_embeddings = r.dim("max_position_embeddings", 2048, ConfigLimits::kPositions);
  c.hidden_size = r.dim("hidden_size", 2048, ConfigLimits::kWidth);
  // transformers writes num_layers / num_heads (num_hidden_layers / num_attention_heads map to them).
  c.num_layers = r.has("num_layers") ? r.dim("num_layers", std::nullopt, ConfigLimits::kLayers)
                                     : r.dim("num_hidden_layers", 24, ConfigLimits::kLayers);
  c.num_heads = r.has("num_heads") ? r.dim("num_heads", std::nullopt, ConfigLimits::kHeads)
                                   : r.dim("num_attention_heads", 16, ConfigLimits::kHeads);
  if (c.hidden_size % c.num_heads != 0) r.fail("hidden_size is not a multiple of num_heads");
  c.intermediate_size = r.dim("intermediate_size", 4 * c.hidden_size, ConfigLimits::kWidth);
  c.window_size = r.dim("window_size", 256, ConfigLimits::kPositions);
  c.layer_norm_epsilon = r.positive("layer_norm_epsilon", 1e-5);
  c.activation_function = r.get<std::string>("activation_function", "gelu_new");
  check_activation(c.activation_function);
  c.tie_word_embeddings = r.get<bool>("tie_word_embeddings", true);
  c.local = read_attention_types(r, c.num_layers);
  return c;
}

GPTNeoSelfAttention::GPTNeoSelfAttention(const GPTNeoConfig& c)
    : heads_(c.num_heads), head_dim_(c.hidden_size / c.num_heads) {
  k_proj = register_module("k_proj", std::make_shared<Linear>(c.hidden_size, c.hidden_size, false));
  v_proj = register_module("v_proj", std::make_shared<Linear>(c.hidden_size, c.hidden_size, false));
  q_proj = register_module("q_proj", std::make_shared<Linear>(c.hidden_size, c.hidden_size, false));
  out_proj = register_module("out_proj", std::make_shared<Linear>(c.hidden_size, c.hidden_size, true));
}

at::Tensor GPTNeoSelfAttention::forward(const at::Tensor& h, const at::Tensor& mask, KVCache* cache, size_t layer) {
  auto q = split_heads(q_proj->forward(h), heads_, head_dim_);
  auto k = split_heads(k_proj->forward(h), heads_, head_dim_);
  auto v = split_heads(v_proj->forward(h), heads_, head_dim_);
  update_cache(cache, layer, k, v);
  // GPT-Neo's scores are not scaled; transformers computes them in float32 so they cannot overflow.
  const auto dtype = q.scalar_type();
  at::Tensor out = dtype == at::kFloat ? attend(q, k, v, mask, 1.0, /*is_causal=*/true)
                                       : attend(q.to(at::kFloat), k.to(at::kFloat), v.to(at::kFloat), mask, 1.0,
                                                /*is_causal=*/true)
                                             .to(dtype);
  return out_proj->forward(out);
}

GPTNeoAttention::GPTNeoAttention(const GPTNeoConfig& c) {
  attention = register_module("attention", std::make_shared<GPTNeoSelfAttention>(c));
}

GPTNeoMLP::GPTNeoMLP(const GPTNeoConfig& c) : act_(c.activation_function) {
  c_fc = register_module("c_fc", std::make_shared<Linear>(c.hidden_size, c.intermediate_size, true));
  c_proj = register_module("c_proj", std::make_shared<Linear>(c.intermediate_size, c.hidden_size, true));
}

at::Tensor GPTNeoMLP::base_forward(const at::Tensor& x) { return c_proj->forward(activation(act_, c_fc->forward(x))); }

GPTNeoBlock::GPTNeoBlock(const GPTNeoConfig& c) {
  ln_1 = register_module("ln_1", std::make_shared<LayerNorm>(c.hidden_size, c.layer_norm_epsilon));
  attn = register_module("attn", std::make_shared<GPTNeoAttention>(c));
  ln_2 = register_module("ln_2", std::make_shared<LayerNorm>(c.hidden_size, c.layer_norm_epsilon));
  mlp = register_module("mlp", std::make_shared<GPTNeoMLP>(c));
}

at::Tensor GPTNeoBlock::forward(const at::Tensor& h, const at::Tensor& mask, KVCache* cache, size_t layer) {
  auto x = h + attn->attention->forward(ln_1->forward(h), mask, cache, layer);
  return x + mlp->forward(ln_2->forward(x));
}

GPTNeoModel::GPTNeoModel(const GPTNeoConfig& c) : local_(c.local), window_(c.window_size) {
  wte = register_module("wte", std::make_shared<Embedding>(c.vocab_size, c.hidden_size));
  wpe = register_module("wpe", std::make_shared<Embedding>(c.max_position_embeddings, c.hidden_size));
  h = register_module("h", std::make_shared<ModuleList<GPTNeoBlock>>());
  for (int64_t i = 0; i < c.num_layers; ++i) h->push_back(std::make_shared<GPTNeoBlock>(c));
  ln_f = register_module("ln_f", std::make_shared<LayerNorm>(c.hidden_size, c.layer_norm_epsilon));
}

at::Tensor GPTNeoModel::forward(const ModelInputs& in) {
  auto x = in.inputs_embeds.defined() ? in.inputs_embeds : wte->forward(in.input_ids);
  auto step = begin_decoder_step(in, h->size(), x.device());
  x = x + wpe->forward(step.positions.to(x.device()));
  // Local layers see keys at most window_size - 1 places back (by index in the sequence, as
  // transformers' banded buffer): one windowed mask serves them all.
  const bool any_local = std::find(local_.begin(), local_.end(), true) != local_.end();
  const at::Tensor local_mask = any_local ? step.window_mask(in, window_, x.device()) : at::Tensor();
  x = run_decoder_blocks(h->size(), x, in,
                         [this, global_mask = step.mask, local_mask](size_t i, const at::Tensor& t, KVCache* c) {
                           return (*h)[i].forward(t, local_[i] ? local_mask : global_mask, c, i);
                         });
  return ln_f->forward(x);
}

GPTNeoForCausalLM::GPTNeoForCausalLM(const nlohmann::json& j, const std::string& where)
    : GPTNeoForCausalLM(j, GPTNeoConfig::from_json(j, where)) {}

GPTNeoForCausalLM::GPTNeoForCausalLM(const nlohmann::json& j, GPTNeoConfig cfg)
    : CausalLMBase(j, cfg.tie_word_embeddings), cfg_(std::move(cfg)) {
  transformer = register_module("transformer", std::make_shared<GPTNeoModel>(cfg_));
  add_lm_head(cfg_.hidden_size, cfg_.vocab_size);
}

std::shared_ptr<Model> make_gpt_neo_classifier(const nlohmann::json& j, const std::string& where) {
  auto c = GPTNeoConfig::from_json(j, where);
  return std::make_shared<DecoderForSequenceClassification<GPTNeoModel>>(
      j, where, "GPTNeoForSequenceClassification", "transformer", std::make_shared<GPTNeoModel>(c), c.hidden_size,
      c.num_layers, c.max_position_embeddings);
}

}  // namespace peft
