// Configs of the soft-prompt methods and how each builds its input adapter.
#include <ATen/ATen.h>

#include <cmath>
#include <filesystem>

#include "peft/layers.h"
#include "peft/prompt.h"
#include "peft/tokenizer.h"
#include "tuners/config_fields.h"
#include "tuners/prompt/soft_prompt.h"

namespace peft {

namespace {

// HF PEFT 0.21's fields for each method (PromptLearningConfig's shared ones included).
const ojson& prompt_tuning_defaults() {
  static const auto j = ojson::parse(R"({
    "auto_mapping": null, "base_model_name_or_path": null, "inference_mode": true, "modules_to_save": null,
    "num_attention_heads": null, "num_layers": null, "num_transformer_submodules": null,
    "num_virtual_tokens": null, "peft_type": "PROMPT_TUNING", "peft_version": "0.21.2",
    "prompt_tuning_init": "RANDOM", "prompt_tuning_init_text": null, "revision": null, "task_type": null,
    "token_dim": null, "tokenizer_kwargs": null, "tokenizer_name_or_path": null
  })");
  return j;
}
const ojson& p_tuning_defaults() {
  static const auto j = ojson::parse(R"({
    "auto_mapping": null, "base_model_name_or_path": null, "encoder_dropout": 0.0, "encoder_hidden_size": null,
    "encoder_num_layers": 2, "encoder_reparameterization_type": "MLP", "inference_mode": true,
    "modules_to_save": null, "num_attention_heads": null, "num_layers": null, "num_transformer_submodules": null,
    "num_virtual_tokens": null, "peft_type": "P_TUNING", "peft_version": "0.21.2", "revision": null,
    "task_type": null, "token_dim": null
  })");
  return j;
}
const ojson& prefix_defaults() {
  static const auto j = ojson::parse(R"({
    "auto_mapping": null, "base_model_name_or_path": null, "encoder_hidden_size": null, "inference_mode": true,
    "init_weights": null, "modules_to_save": null, "num_attention_heads": null, "num_layers": null,
    "num_transformer_submodules": null, "num_virtual_tokens": null, "peft_type": "PREFIX_TUNING",
    "peft_version": "0.21.2", "prefix_projection": false, "revision": null, "task_type": null, "token_dim": null
  })");
  return j;
}
const ojson& vpt_defaults() {
  static const auto j = ojson::parse(R"({
    "base_model_name_or_path": null, "deep": false, "inference_mode": true, "modules_to_save": null,
    "num_virtual_tokens": 10, "peft_type": "VPT", "task_type": null
  })");
  return j;
}

int64_t int_or_zero(const ConfigFields& f, const char* key) { return f.is_null(key) ? 0 : f.get<int64_t>(key); }

void read_sizes(const ConfigFields& f, PromptLearningConfig& c) {
  c.num_virtual_tokens = int_or_zero(f, "num_virtual_tokens");
  if (c.num_virtual_tokens <= 0) f.fail("'num_virtual_tokens' must be a positive integer");
  c.token_dim = int_or_zero(f, "token_dim");
  c.num_attention_heads = int_or_zero(f, "num_attention_heads");
  c.num_layers = int_or_zero(f, "num_layers");
  c.num_transformer_submodules = f.is_null("num_transformer_submodules") ? 1 : f.get<int64_t>("num_transformer_submodules");
  if (c.num_transformer_submodules != 1) f.fail("num_transformer_submodules must be 1 (encoder-decoder models are not supported)");
}

ojson size_fields(const PromptLearningConfig& c) {
  auto v = [](int64_t x) { return x > 0 ? ojson(x) : ojson(); };
  ojson j;
  j["num_virtual_tokens"] = c.num_virtual_tokens;
  j["token_dim"] = v(c.token_dim);
  j["num_attention_heads"] = v(c.num_attention_heads);
  j["num_layers"] = v(c.num_layers);
  j["num_transformer_submodules"] = c.num_transformer_submodules;
  return j;
}

at::Device device_of(Model& model) { return model.named_parameters().front().second.device(); }

// The first of `keys` config.json has.
int64_t model_int(const Model& model, std::initializer_list<const char*> keys) {
  for (const char* k : keys)
    if (model.config().contains(k) && model.config()[k].is_number_integer()) return model.config()[k].get<int64_t>();
  return 0;
}

// A config's sizes (from a file, perhaps for another model) must be the model's.
void check_size(const std::string& method, const char* field, int64_t config, int64_t model_value,
                const std::string& model) {
  if (config != model_value)
    throw std::invalid_argument(method + ": " + field + " is " + std::to_string(config) + " but " + model + " needs " +
                                std::to_string(model_value) + " (is this adapter for another base model?)");
}

void check_token_dim(const PromptLearningConfig& c, Model& model) {
  Embedding* emb = model.input_embeddings();
  if (!emb) throw std::invalid_argument(c.peft_type() + ": " + model.type_name() + " has no token embedding");
  check_size(c.peft_type(), "token_dim", c.token_dim, emb->embedding_dim, model.type_name());
}

}  // namespace

void PromptLearningConfig::resolve(const Model& model) {
  if (num_layers == 0) num_layers = model_int(model, {"num_hidden_layers", "num_layers", "n_layer"});
  if (token_dim == 0) token_dim = model_int(model, {"hidden_size", "n_embd", "d_model"});
  if (num_attention_heads == 0) num_attention_heads = model_int(model, {"num_attention_heads", "n_head", "num_heads"});
  // Prefix tuning on grouped-query attention: keys and values have the kv heads' size.
  if (peft_type() == "PREFIX_TUNING" && model.config().contains("num_key_value_heads") &&
      model.config()["num_key_value_heads"].is_number_integer() && source.value("token_dim", ojson()).is_null()) {
    const int64_t kv = model.config()["num_key_value_heads"].get<int64_t>();
    const int64_t head_dim = model_int(model, {"head_dim"}) > 0 ? model_int(model, {"head_dim"})
                                                                  : token_dim / num_attention_heads;
    token_dim = head_dim * kv;
    num_attention_heads = kv;
  }
  if (token_dim == 0 || num_attention_heads == 0 || num_layers == 0)
    throw std::invalid_argument(peft_type() + ": cannot read the model's sizes from its config.json; set token_dim, "
                                "num_attention_heads and num_layers");
}

// --- prompt tuning ---------------------------------------------------------------------

PromptTuningConfig PromptTuningConfig::from_json(const ojson& j, const std::string& where,
                                                 std::vector<std::string>* unknown) {
  PromptTuningConfig c;
  ConfigFields f(j, prompt_tuning_defaults(), "PROMPT_TUNING", where, unknown, c);
  read_sizes(f, c);
  c.prompt_tuning_init = f.get<std::string>("prompt_tuning_init");
  if (!f.is_null("prompt_tuning_init_text")) c.prompt_tuning_init_text = f.get<std::string>("prompt_tuning_init_text");
  if (!f.is_null("tokenizer_name_or_path")) c.tokenizer_name_or_path = f.get<std::string>("tokenizer_name_or_path");
  if (c.prompt_tuning_init != "RANDOM" && c.prompt_tuning_init != "SAMPLE_VOCAB" && c.prompt_tuning_init != "TEXT")
    f.fail("prompt_tuning_init must be RANDOM, SAMPLE_VOCAB or TEXT, got '" + c.prompt_tuning_init + "'");
  f.require_default("tokenizer_kwargs");
  return c;
}

ojson PromptTuningConfig::to_json() const {
  ojson fields = size_fields(*this);
  fields["prompt_tuning_init"] = prompt_tuning_init;
  fields["prompt_tuning_init_text"] = prompt_tuning_init_text.empty() ? ojson() : ojson(prompt_tuning_init_text);
  fields["tokenizer_name_or_path"] = tokenizer_name_or_path.empty() ? ojson() : ojson(tokenizer_name_or_path);
  return config_json(*this, prompt_tuning_defaults(), fields);
}

std::shared_ptr<InputAdapter> PromptTuningConfig::make_input_adapter(Model& model, at::Generator& gen) const {
  check_token_dim(*this, model);
  auto a = std::make_shared<SoftPrompt>(num_virtual_tokens, token_dim);
  Embedding* emb = model.input_embeddings();
  const int64_t n = num_virtual_tokens;
  if (prompt_tuning_init == "RANDOM") {
    a->embedding = at::randn({n, token_dim}, gen, at::TensorOptions(at::kFloat));  // nn.Embedding's init
  } else {
    std::vector<int64_t> ids;
    if (prompt_tuning_init == "SAMPLE_VOCAB") {
      auto r = at::randint(emb->num_embeddings, {n}, gen, at::TensorOptions(at::kLong));
      ids.assign(r.data_ptr<int64_t>(), r.data_ptr<int64_t>() + n);
    } else {
      // HF: the init text's ids (special tokens included), cut or repeated to n.
      namespace fs = std::filesystem;
      fs::path tok = tokenizer_name_or_path;
      if (fs::is_directory(tok)) tok /= "tokenizer.json";
      if (tokenizer_name_or_path.empty() || !fs::exists(tok))
        throw std::invalid_argument("PROMPT_TUNING: prompt_tuning_init TEXT needs tokenizer_name_or_path, a local "
                                    "folder with tokenizer.json (got '" + tokenizer_name_or_path + "')");
      if (prompt_tuning_init_text.empty()) throw std::invalid_argument("PROMPT_TUNING: prompt_tuning_init_text is empty");
      auto text_ids = Tokenizer::from_file(tok.string()).encode(prompt_tuning_init_text).ids;
      if (text_ids.empty()) throw std::invalid_argument("PROMPT_TUNING: prompt_tuning_init_text has no tokens");
      for (int64_t i = 0; i < n; ++i) ids.push_back(text_ids[i % text_ids.size()]);
    }
    a->embedding = at::embedding(emb->weight.detach().to(at::kCPU, at::kFloat), at::tensor(ids, at::kLong)).clone();
  }
  a->to(device_of(model));
  return a;
}

// --- P-tuning --------------------------------------------------------------------------

PromptEncoderConfig PromptEncoderConfig::from_json(const ojson& j, const std::string& where,
                                                   std::vector<std::string>* unknown) {
  PromptEncoderConfig c;
  ConfigFields f(j, p_tuning_defaults(), "P_TUNING", where, unknown, c);
  read_sizes(f, c);
  c.encoder_reparameterization_type = f.get<std::string>("encoder_reparameterization_type");
  c.encoder_hidden_size = int_or_zero(f, "encoder_hidden_size");
  c.encoder_num_layers = f.get<int64_t>("encoder_num_layers");
  c.encoder_dropout = f.get<double>("encoder_dropout");
  if (c.encoder_reparameterization_type != "MLP" && c.encoder_reparameterization_type != "LSTM")
    f.fail("encoder_reparameterization_type must be MLP or LSTM, got '" + c.encoder_reparameterization_type + "'");
  return c;
}

ojson PromptEncoderConfig::to_json() const {
  ojson fields = size_fields(*this);
  fields["encoder_reparameterization_type"] = encoder_reparameterization_type;
  fields["encoder_hidden_size"] = encoder_hidden_size > 0 ? ojson(encoder_hidden_size) : ojson(token_dim);
  fields["encoder_num_layers"] = encoder_num_layers;
  fields["encoder_dropout"] = encoder_dropout;
  return config_json(*this, p_tuning_defaults(), fields);
}

std::shared_ptr<InputAdapter> PromptEncoderConfig::make_input_adapter(Model& model, at::Generator& gen) const {
  check_token_dim(*this, model);
  const int64_t n = num_virtual_tokens;
  const auto opts = at::TensorOptions(at::kFloat);
  std::shared_ptr<SoftPrompt> a;
  if (inference_mode) {
    a = std::make_shared<SoftPrompt>(n, token_dim);
  } else {
    const int64_t hidden = encoder_hidden_size > 0 ? encoder_hidden_size : token_dim;
    auto enc = std::make_shared<PromptEncoder>(n, token_dim, hidden, encoder_reparameterization_type == "LSTM",
                                               encoder_num_layers, encoder_dropout);
    // torch's defaults: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for Linear and LSTM.
    for (auto* list : {&enc->mlp, &enc->lstm})
      for (size_t i = 0; i < list->size(); ++i) {
        auto& t = (*list)[i];
        const int64_t fan = list == &enc->mlp ? (i % 2 == 0 ? t.size(1) : (*list)[i - 1].size(1)) : hidden;
        const double bound = 1.0 / std::sqrt(static_cast<double>(fan));
        t = at::rand(t.sizes(), gen, opts) * (2 * bound) - bound;
      }
    a = enc;
  }
  a->embedding = at::randn({n, token_dim}, gen, opts);
  a->to(device_of(model));
  return a;
}

// --- prefix tuning ---------------------------------------------------------------------

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

std::shared_ptr<InputAdapter> PrefixTuningConfig::make_input_adapter(Model& model, at::Generator& gen) const {
  if (model.num_cache_layers() == 0)
    throw std::invalid_argument("PREFIX_TUNING: " + model.type_name() + " has no KV cache; prefix tuning needs a decoder");
  if (token_dim % num_attention_heads != 0)
    throw std::invalid_argument("PREFIX_TUNING: token_dim " + std::to_string(token_dim) +
                                " is not a multiple of num_attention_heads " + std::to_string(num_attention_heads));
  const int64_t head_dim = token_dim / num_attention_heads;
  check_size(peft_type(), "num_layers", num_layers, model.num_cache_layers(), model.type_name());
  {
    // Keys and values per layer: kv heads x head size of the model's attention.
    const int64_t heads = model_int(model, {"num_attention_heads", "n_head"});
    const int64_t kv = model_int(model, {"num_key_value_heads"}) > 0 ? model_int(model, {"num_key_value_heads"}) : heads;
    const int64_t hd = model_int(model, {"head_dim"}) > 0 ? model_int(model, {"head_dim"})
                                                          : model_int(model, {"hidden_size", "n_embd"}) / heads;
    check_size(peft_type(), "token_dim (kv heads x head_dim)", token_dim, kv * hd, model.type_name());
    check_size(peft_type(), "num_attention_heads (kv heads)", num_attention_heads, kv, model.type_name());
  }
  const bool projection = prefix_projection && !inference_mode;
  const int64_t hidden = encoder_hidden_size > 0 ? encoder_hidden_size : token_dim;
  auto a = std::make_shared<PrefixEncoder>(num_virtual_tokens, num_layers, num_attention_heads, head_dim, projection,
                                           token_dim, hidden);
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

// --- visual prompt tuning --------------------------------------------------------------

VPTConfig VPTConfig::from_json(const ojson& j, const std::string& where, std::vector<std::string>* unknown) {
  VPTConfig c;
  ConfigFields f(j, vpt_defaults(), "VPT", where, unknown, c);
  c.num_virtual_tokens = f.get<int64_t>("num_virtual_tokens");
  c.deep = f.get<bool>("deep");
  if (c.num_virtual_tokens <= 0) f.fail("'num_virtual_tokens' must be positive");
  return c;
}

ojson VPTConfig::to_json() const {
  ojson fields;
  fields["num_virtual_tokens"] = num_virtual_tokens;
  fields["deep"] = deep;
  return config_json(*this, vpt_defaults(), fields);
}

void VPTConfig::resolve(const Model& model) {
  if (model.task() == TaskKind::kImageClassification && targets.modules_to_save.empty())
    targets.modules_to_save = {"classifier"};
}

std::shared_ptr<InputAdapter> VPTConfig::make_input_adapter(Model& model, at::Generator& gen) const {
  if (model.type_name().rfind("ViT", 0) != 0)
    throw std::invalid_argument("VPT: visual prompt tuning needs a ViT model, not " + model.type_name());
  const auto& c = model.config();
  const int64_t hidden = c.value("hidden_size", int64_t{768}), layers = c.value("num_hidden_layers", int64_t{12});
  const int64_t patch = c.value("patch_size", int64_t{16});
  auto a = std::make_shared<VisualPrompts>(layers, num_virtual_tokens, hidden, deep);
  const double v = std::sqrt(6.0 / static_cast<double>(3 * patch * patch + hidden));
  a->vpt_prompts = at::rand(a->vpt_prompts.sizes(), gen, at::TensorOptions(at::kFloat)) * (2 * v) - v;
  a->to(device_of(model));
  return a;
}

}  // namespace peft
