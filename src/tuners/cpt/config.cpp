// CPT: config, injection and the file reader.
#include <ATen/ATen.h>

#include <stdexcept>

#include "peft/cpt.h"
#include "peft/layers.h"
#include "tuners/cpt/prompt.h"
#include "tuners/file_tensors.h"
#include "tuners/prompt_learning/prompt_learning.h"
#include "tuners/registry.h"

namespace peft {

namespace {

// HF PEFT 0.21's fields.
const ojson& cpt_defaults() {
  static const auto j = ojson::parse(R"({
    "auto_mapping": null, "base_model_name_or_path": null, "cpt_mask": null, "cpt_token_ids": null,
    "cpt_tokens_type_mask": null, "inference_mode": true, "modules_to_save": null, "num_attention_heads": null,
    "num_layers": null, "num_transformer_submodules": null, "num_virtual_tokens": null,
    "opt_loss_decay_factor": 1.0, "opt_projection_epsilon": 0.1, "opt_projection_format_epsilon": 0.1,
    "opt_weighted_loss_type": "none", "peft_type": "CPT", "peft_version": "0.21.2", "revision": null,
    "task_type": null, "token_dim": null, "tokenizer_name_or_path": null
  })");
  return j;
}

std::vector<int64_t> int_list(const ConfigFields& f, const char* key) {
  std::vector<int64_t> out;
  if (f.is_null(key)) return out;
  const auto& v = f.value(key);
  if (!v.is_array()) f.fail(std::string("'") + key + "' must be a list of integers, got " + v.dump());
  for (const auto& x : v) {
    if (!x.is_number_integer()) f.fail(std::string("'") + key + "' must be a list of integers, got " + v.dump());
    out.push_back(x.get<int64_t>());
  }
  return out;
}

}  // namespace

void CPTConfig::validate() const {
  if (task_type != "CAUSAL_LM")
    throw std::invalid_argument("CPT only supports task_type CAUSAL_LM, got '" + task_type + "'");
  if (cpt_token_ids.empty()) throw std::invalid_argument("CPT: cpt_token_ids is empty");
  if (cpt_mask.size() != cpt_token_ids.size() || cpt_tokens_type_mask.size() != cpt_token_ids.size())
    throw std::invalid_argument("CPT: cpt_token_ids, cpt_mask and cpt_tokens_type_mask must have the same length, got " +
                                std::to_string(cpt_token_ids.size()) + ", " + std::to_string(cpt_mask.size()) +
                                " and " + std::to_string(cpt_tokens_type_mask.size()));
  if (num_virtual_tokens != static_cast<int64_t>(cpt_token_ids.size()))
    throw std::invalid_argument("CPT: num_virtual_tokens " + std::to_string(num_virtual_tokens) +
                                " is not the length of cpt_token_ids (" + std::to_string(cpt_token_ids.size()) + ")");
  if (opt_weighted_loss_type != "none" && opt_weighted_loss_type != "decay")
    throw std::invalid_argument("CPT: opt_weighted_loss_type must be 'none' or 'decay', got '" +
                                opt_weighted_loss_type + "'");
}

CPTConfig CPTConfig::from_json(const ojson& j, const std::string& where, std::vector<std::string>* unknown) {
  CPTConfig c;
  ConfigFields f(j, cpt_defaults(), "CPT", where, unknown, c);
  // HF's __post_init__: cpt_token_ids defaults to [0], the masks to ones, and
  // num_virtual_tokens is the template's length (one given otherwise is an error here).
  if (!f.is_null("cpt_token_ids")) c.cpt_token_ids = int_list(f, "cpt_token_ids");
  c.cpt_mask = f.is_null("cpt_mask") ? std::vector<int64_t>(c.cpt_token_ids.size(), 1) : int_list(f, "cpt_mask");
  c.cpt_tokens_type_mask = f.is_null("cpt_tokens_type_mask") ? std::vector<int64_t>(c.cpt_token_ids.size(), 1)
                                                            : int_list(f, "cpt_tokens_type_mask");
  c.num_virtual_tokens =
      f.is_null("num_virtual_tokens") ? static_cast<int64_t>(c.cpt_token_ids.size()) : f.get<int64_t>("num_virtual_tokens");
  c.token_dim = int_or_zero(f, "token_dim");
  c.num_attention_heads = int_or_zero(f, "num_attention_heads");
  c.num_layers = int_or_zero(f, "num_layers");
  c.num_transformer_submodules = 1;  // HF sets it, whatever the file says
  c.opt_weighted_loss_type = f.is_null("opt_weighted_loss_type") ? "none" : f.get<std::string>("opt_weighted_loss_type");
  c.opt_loss_decay_factor = f.is_null("opt_loss_decay_factor") ? 1.0 : f.get<double>("opt_loss_decay_factor");
  c.opt_projection_epsilon = f.is_null("opt_projection_epsilon") ? 0.1 : f.get<double>("opt_projection_epsilon");
  c.opt_projection_format_epsilon =
      f.is_null("opt_projection_format_epsilon") ? 0.1 : f.get<double>("opt_projection_format_epsilon");
  if (!f.is_null("tokenizer_name_or_path")) c.tokenizer_name_or_path = f.get<std::string>("tokenizer_name_or_path");
  try {
    c.validate();
  } catch (const std::invalid_argument& e) {
    f.fail(e.what());
  }
  return c;
}

ojson CPTConfig::to_json() const {
  ojson fields = size_fields(*this);
  fields["cpt_token_ids"] = cpt_token_ids;
  fields["cpt_mask"] = cpt_mask;
  fields["cpt_tokens_type_mask"] = cpt_tokens_type_mask;
  fields["opt_weighted_loss_type"] = opt_weighted_loss_type;
  fields["opt_loss_decay_factor"] = opt_loss_decay_factor;
  fields["opt_projection_epsilon"] = opt_projection_epsilon;
  fields["opt_projection_format_epsilon"] = opt_projection_format_epsilon;
  fields["tokenizer_name_or_path"] = tokenizer_name_or_path.empty() ? ojson() : ojson(tokenizer_name_or_path);
  return config_json(*this, cpt_defaults(), fields);
}

void CPTConfig::resolve(const Model& model) {
  // A config made in code: HF's __post_init__ fills the masks and the count.
  if (cpt_mask.empty()) cpt_mask.assign(cpt_token_ids.size(), 1);
  if (cpt_tokens_type_mask.empty()) cpt_tokens_type_mask.assign(cpt_token_ids.size(), 1);
  if (num_virtual_tokens == 0) num_virtual_tokens = static_cast<int64_t>(cpt_token_ids.size());
  PromptLearningConfig::resolve(model);
  num_transformer_submodules = 1;
}

std::shared_ptr<InputAdapter> CPTConfig::make_input_adapter(Model& model, at::Generator&) const {
  validate();
  if (as_seq2seq(model) || model.task() != TaskKind::kCausalLM)
    throw std::invalid_argument("CPT only supports causal LMs (task_type CAUSAL_LM); " + model.type_name() + " is not one");
  check_token_dim(*this, model);
  auto a = std::make_shared<CptPrompt>(num_virtual_tokens, token_dim, cpt_tokens_type_mask,
                                       opt_projection_format_epsilon, opt_projection_epsilon);
  a->token_ids = cpt_token_ids;
  a->loss_type = opt_weighted_loss_type;
  a->decay_factor = opt_loss_decay_factor;
  Embedding* emb = model.input_embeddings();  // check_token_dim: there is one
  for (int64_t id : cpt_token_ids)
    if (id < 0 || id >= emb->num_embeddings)
      throw std::invalid_argument("CPT: cpt_token_ids holds " + std::to_string(id) + ", outside the model's " +
                                  std::to_string(emb->num_embeddings) + "-token vocabulary");
  if (!inference_mode) {
    // HF: the word embeddings of the template, in float32 (loading fills them from the file).
    a->embedding =
        at::embedding(emb->weight.detach().to(at::kCPU, at::kFloat), at::tensor(cpt_token_ids, at::kLong)).clone();
  }
  a->to(device_of(model));
  return a;
}

namespace {
[[maybe_unused]] const bool kCptRegistered = register_method<CPTConfig>("CPT");
// HF files embedding + delta as one "prompt_embeddings"; loaded, it is the frozen rows and
// the delta starts at zero (HF's CPTEmbedding in inference mode, then load_state_dict).
[[maybe_unused]] const bool kCptReader = register_file_tensors_reader("CPT", [](const AdapterConfig&, FileTensors& t) {
  for (size_t i = 0; i < t.size(); ++i) {
    if (t[i].first != "prompt_embeddings") continue;
    const at::Tensor p = t[i].second;
    t[i].first = "embedding.weight";
    t.emplace_back("delta_embedding.weight", at::zeros(p.sizes(), at::TensorOptions(at::kFloat)));
    return;
  }
});
}  // namespace

}  // namespace peft
