// Adaption prompts: HF PEFT 0.21's AdaptionPromptConfig, its per-model-type table, and
// the prompts of the top attention modules (AdaptionPromptModel.add_adapter).
#include <ATen/ATen.h>

#include "peft/adaption_prompt.h"
#include "tuners/adaption_prompt/layer.h"
#include "tuners/config_fields.h"
#include "tuners/prompt_learning/prompt_learning.h"
#include "tuners/registry.h"

namespace peft {

namespace {

const ojson& adaption_prompt_defaults() {
  static const auto j = ojson::parse(R"({
    "adapter_layers": null, "adapter_len": null, "auto_mapping": null, "base_model_name_or_path": null,
    "inference_mode": true, "peft_type": "ADAPTION_PROMPT", "peft_version": "0.21.2", "revision": null,
    "target_modules": null, "task_type": null
  })");
  return j;
}

// HF's TRANSFORMERS_MODEL_CONFIG: the attention submodule and the projections the prompts
// go through (GPT-2: keys and values both from c_attn, no output projection).
struct ModelTypeConfig {
  const char* model_type;
  const char* target_modules;
  const char* k_proj;
  const char* v_proj;  // nullptr: split from k_proj's output
  const char* o_proj;  // nullptr: none
};
constexpr ModelTypeConfig kModelTypes[] = {
    {"llama", "self_attn", "k_proj", "v_proj", "o_proj"},
    {"mistral", "self_attn", "k_proj", "v_proj", "o_proj"},
    {"gpt2", "attn", "c_attn", nullptr, nullptr},
};

const ModelTypeConfig& model_type_config(const Model& model) {
  const std::string type = model.config().value("model_type", std::string());
  for (const auto& t : kModelTypes)
    if (type == t.model_type) return t;
  throw std::invalid_argument("ADAPTION_PROMPT: unsupported model type '" + type +
                              "' (HF PEFT's adaption prompts support llama, mistral and gpt2)");
}

AdaptableLayer* projection(Module& attention, const std::string& path, const char* name) {
  auto* m = dynamic_cast<AdaptableLayer*>(attention.find(name));
  if (!m) throw std::invalid_argument("ADAPTION_PROMPT: '" + path + "' has no projection '" + name + "'");
  return m;
}

}  // namespace

AdaptionPromptConfig AdaptionPromptConfig::from_json(const ojson& j, const std::string& where,
                                                     std::vector<std::string>* unknown) {
  AdaptionPromptConfig c;
  ConfigFields f(j, adaption_prompt_defaults(), "ADAPTION_PROMPT", where, unknown, c);
  // One submodule name, not a target list (HF's field is a str).
  const auto& t = f.value("target_modules");
  if (!t.is_null() && !t.is_string()) f.fail("'target_modules' must be the attention submodules' name, e.g. \"self_attn\"");
  if (t.is_string()) c.target_modules = t.get<std::string>();
  c.targets.target_regex.reset();
  for (const char* key : {"adapter_len", "adapter_layers"})
    if (f.is_null(key) || f.get<int64_t>(key) <= 0) f.fail("'" + std::string(key) + "' must be a positive integer");
  c.adapter_len = f.get<int64_t>("adapter_len");
  c.adapter_layers = f.get<int64_t>("adapter_layers");
  return c;
}

ojson AdaptionPromptConfig::to_json() const {
  ojson fields;
  fields["target_modules"] = target_modules.empty() ? ojson() : ojson(target_modules);
  fields["adapter_len"] = adapter_len;
  fields["adapter_layers"] = adapter_layers;
  ojson j = config_json(*this, adaption_prompt_defaults(), fields);
  j.erase("modules_to_save");  // AdaptionPromptConfig has no such field
  return j;
}

void AdaptionPromptConfig::resolve(const Model& model) {
  const auto& t = model_type_config(model);
  if (target_modules.empty()) target_modules = t.target_modules;
  // Nothing is reparameterized while training: the trained tensors are the saved ones, so
  // no prompt-encoder file is written beside them.
  inference_mode = true;
}

std::shared_ptr<InputAdapter> AdaptionPromptConfig::make_input_adapter(Model& model, at::Generator& gen) const {
  const auto& t = model_type_config(model);
  // The attention modules, in model order (HF: names ending in ".<target_modules>").
  std::vector<std::pair<std::string, Module*>> found;
  const std::string suffix = "." + target_modules;
  for (auto& [name, m] : model.named_modules())
    if (name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0)
      found.emplace_back(name, m);
  if (static_cast<int64_t>(found.size()) < adapter_layers)
    throw std::invalid_argument("ADAPTION_PROMPT: config specifies more adapter layers '" +
                                std::to_string(adapter_layers) + "' than the model has '" +
                                std::to_string(found.size()) + "'");
  found.erase(found.begin(), found.end() - adapter_layers);

  const int64_t hidden = model_int(model, {"hidden_size", "n_embd"});
  const int64_t heads = model_int(model, {"num_attention_heads", "n_head"});
  const int64_t head_dim = model_int(model, {"head_dim"}) > 0 ? model_int(model, {"head_dim"}) : hidden / heads;
  auto adapter = std::make_shared<AdaptionPrompts>(model, head_dim);
  for (auto& [path, m] : found) {
    auto* attention = dynamic_cast<ExtensibleAttention*>(m);
    if (!attention)
      throw std::invalid_argument("ADAPTION_PROMPT: '" + path + "' is a " + m->type_name() +
                                  ", not an attention module adaption prompts can extend");
    auto l = std::make_unique<AdaptionPrompts::Layer>();
    l->attention = attention;
    l->k = projection(*m, path, t.k_proj);
    if (t.v_proj) l->v = projection(*m, path, t.v_proj);
    if (t.o_proj) l->o = projection(*m, path, t.o_proj);
    // HF views k_proj's output as heads / (in / out) heads of head_dim.
    const int64_t kv_dim = t.v_proj ? l->k->output_dim() : hidden;
    const int64_t factor = t.v_proj ? l->k->input_dim() / l->k->output_dim() : 1;
    if (factor <= 0 || (heads / factor) * head_dim != kv_dim)
      throw std::invalid_argument("ADAPTION_PROMPT: '" + path + "." + t.k_proj + "' has " + std::to_string(kv_dim) +
                                  " output features, not " + std::to_string(heads) + " heads / " +
                                  std::to_string(factor) + " of " + std::to_string(head_dim) +
                                  " as HF PEFT's AdaptedAttention assumes");
    // HF: the weights' dtype (float32 for quantized ones), N(0, 1) prompts, zero gates.
    at::Tensor* w = (t.v_proj ? projection(*m, path, "q_proj") : projection(*m, path, "c_proj"))->weight_tensor();
    const auto dtype = w && w->is_floating_point() ? w->scalar_type() : at::kFloat;
    const auto opts = at::TensorOptions(at::kFloat).device(device_of(model));
    l->prompt = at::normal(0.0, 1.0, {1, adapter_len, hidden}, gen, at::TensorOptions(at::kFloat)).to(opts).to(dtype);
    l->gate = at::zeros({1}, opts.dtype(dtype));
    adapter->add_layer(std::move(l), key_prefix() + path);
  }
  return adapter;
}

namespace {
[[maybe_unused]] const bool kAdaptionPromptRegistered = register_method<AdaptionPromptConfig>("ADAPTION_PROMPT");
}  // namespace

}  // namespace peft
