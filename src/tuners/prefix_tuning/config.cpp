// Prefix tuning: config and injection.
#include <ATen/ATen.h>

#include <cmath>

#include "tuners/registry.h"
#include "peft/prompt.h"
#include "tuners/prefix_tuning/layer.h"

namespace peft {

namespace {

// HF PEFT 0.21's fields.
const ojson& prefix_defaults() {
  static const auto j = ojson::parse(R"({
    "auto_mapping": null, "base_model_name_or_path": null, "encoder_hidden_size": null, "inference_mode": true,
    "init_weights": null, "modules_to_save": null, "num_attention_heads": null, "num_layers": null,
    "num_transformer_submodules": null, "num_virtual_tokens": null, "peft_type": "PREFIX_TUNING",
    "peft_version": "0.21.2", "prefix_projection": false, "revision": null, "task_type": null, "token_dim": null
  })");
  return j;
}
// The attention the prefixes enter: key/value heads and head size (kv heads = heads
// without GQA). T5: num_heads of d_kv each; BART and Whisper: the decoder's heads.
std::pair<int64_t, int64_t> kv_heads_and_head_dim(const Model& model) {
  const int64_t heads = model_int(model, {"decoder_attention_heads", "num_attention_heads", "n_head", "num_heads"});
  if (heads <= 0)
    throw std::invalid_argument(model.type_name() + "'s config.json has no attention head count");
  const int64_t kv = model_int(model, {"num_key_value_heads"}) > 0 ? model_int(model, {"num_key_value_heads"}) : heads;
  const int64_t hd = model_int(model, {"head_dim", "d_kv"}) > 0 ? model_int(model, {"head_dim", "d_kv"})
                                                                : model_int(model, {"hidden_size", "n_embd", "d_model"}) / heads;
  return {kv, hd};
}

}  // namespace

void PrefixTuningConfig::resolve(const Model& model) {
  // Sizes a file or the code gave are kept.
  auto given = [&](const char* key, int64_t value) {
    return source.is_object() ? !unset_in_source(*this, key) : value > 0;
  };
  const bool dim_given = given("token_dim", token_dim), layers_given = given("num_layers", num_layers);
  PromptLearningConfig::resolve(model);
  // GQA, and T5 (whose num_heads * d_kv need not be d_model; HF PEFT's d_model fails there).
  if (model_int(model, {"num_key_value_heads", "d_kv"}) > 0 && !dim_given) {
    const auto [kv, head_dim] = kv_heads_and_head_dim(model);
    token_dim = head_dim * kv;
    num_attention_heads = kv;
  }
  // Encoder-decoder: the decoder's layers take the prefixes. HF PEFT reads num_layers (the
  // encoder's), which fails when the decoder has more.
  if (model.config().value("is_encoder_decoder", false) && !layers_given) num_layers = model.num_cache_layers();
}

PrefixTuningConfig PrefixTuningConfig::from_json(const ojson& j, const std::string& where,
                                                 std::vector<std::string>* unknown) {
  PrefixTuningConfig c;
  ConfigFields f(j, prefix_defaults(), "PREFIX_TUNING", where, unknown, c);
  read_sizes(f, c);
  c.encoder_hidden_size = int_or_zero(f, "encoder_hidden_size");
  c.prefix_projection = f.get<bool>("prefix_projection");
  if (!f.is_null("init_weights")) c.init_weights = f.get<std::string>("init_weights");
  if (!c.init_weights.empty() && c.init_weights != "zero") f.fail("init_weights must be null or \"zero\"");
  return c;
}

ojson PrefixTuningConfig::to_json() const {
  ojson fields = size_fields(*this);
  fields["encoder_hidden_size"] = encoder_hidden_size > 0 ? ojson(encoder_hidden_size) : ojson(token_dim);
  fields["prefix_projection"] = prefix_projection;
  fields["init_weights"] = init_weights.empty() ? ojson() : ojson(init_weights);
  return config_json(*this, prefix_defaults(), fields);
}

int64_t checked_prefix_head_dim(const PrefixTuningConfig& c, Model& model) {
  const std::string method = c.peft_type();
  if (model.num_cache_layers() == 0)
    throw std::invalid_argument(method + ": " + model.type_name() + " takes no key/value prefixes (no KV cache)");
  check_submodules(c, model);
  // HF PEFT hands an encoder-decoder model one submodule's prefixes as a decoder-only cache,
  // which T5's cross-attention would append the encoder's keys to.
  if (c.num_transformer_submodules == 1 && as_seq2seq(model))
    throw std::invalid_argument(method + ": " + model.type_name() +
                                " is an encoder-decoder model; num_transformer_submodules must be 2");
  if (c.token_dim % c.num_attention_heads != 0)
    throw std::invalid_argument(method + ": token_dim " + std::to_string(c.token_dim) +
                                " is not a multiple of num_attention_heads " + std::to_string(c.num_attention_heads));
  check_size(method, "num_layers", c.num_layers, model.num_cache_layers(), model.type_name());
  const auto [kv, hd] = kv_heads_and_head_dim(model);  // keys and values per layer
  check_size(method, "token_dim (kv heads x head_dim)", c.token_dim, kv * hd, model.type_name());
  check_size(method, "num_attention_heads (kv heads)", c.num_attention_heads, kv, model.type_name());
  return c.token_dim / c.num_attention_heads;
}

std::shared_ptr<InputAdapter> PrefixTuningConfig::make_input_adapter(Model& model, at::Generator& gen) const {
  const int64_t head_dim = checked_prefix_head_dim(*this, model);
  const bool projection = prefix_projection && !inference_mode;
  const int64_t hidden = encoder_hidden_size > 0 ? encoder_hidden_size : token_dim;
  auto a = std::make_shared<PrefixEncoder>(num_virtual_tokens, num_layers, num_attention_heads, head_dim, projection,
                                           token_dim, hidden);
  a->submodules = num_transformer_submodules;
  const auto opts = at::TensorOptions(at::kFloat);
  a->embedding = init_weights == "zero" && !projection ? at::zeros(a->embedding.sizes(), opts)
                                                       : at::randn(a->embedding.sizes(), gen, opts);
  for (size_t i = 0; i < a->transform.size(); ++i) {
    auto& t = a->transform[i];
    const int64_t fan = i < 2 ? token_dim : hidden;
    const double bound = 1.0 / std::sqrt(static_cast<double>(fan));
    t = (init_weights == "zero" && i >= 2) ? at::zeros(t.sizes(), opts) : at::rand(t.sizes(), gen, opts) * (2 * bound) - bound;
  }
  a->to(device_of(model));
  return a;
}


namespace {
[[maybe_unused]] const bool kPrefixTuningRegistered = register_method<PrefixTuningConfig>("PREFIX_TUNING");
}  // namespace

}  // namespace peft
