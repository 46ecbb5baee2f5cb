// Multitask prompt tuning: config, HF PEFT 0.21's inits, injection.
#include <ATen/ATen.h>

#include "peft/multitask_prompt_tuning.h"
#include "peft/safetensors.h"
#include "tuners/multitask_prompt_tuning/prompt.h"
#include "tuners/registry.h"

namespace peft {

namespace {

const ojson& mpt_defaults() {
  static const auto j = ojson::parse(R"({
    "auto_mapping": null, "base_model_name_or_path": null, "inference_mode": true, "modules_to_save": null,
    "num_attention_heads": null, "num_layers": null, "num_ranks": 1, "num_tasks": 1,
    "num_transformer_submodules": null, "num_virtual_tokens": null, "peft_type": "MULTITASK_PROMPT_TUNING",
    "peft_version": "0.21.2", "prompt_tuning_init": "RANDOM", "prompt_tuning_init_state_dict_path": null,
    "prompt_tuning_init_task": 0, "prompt_tuning_init_text": null, "revision": null, "task_type": null,
    "token_dim": null, "tokenizer_kwargs": null, "tokenizer_name_or_path": null
  })");
  return j;
}

bool from_source(const std::string& init) {
  return init == "AVERAGE_SOURCE_TASKS" || init == "EXACT_SOURCE_TASK" || init == "ONLY_SOURCE_SHARED";
}

// The source tasks' tensor `key`, checked against the shape the target needs.
at::Tensor source_tensor(const SafetensorsFile& f, const std::string& path, const std::string& key,
                         at::IntArrayRef shape) {
  if (!f.contains(key))
    throw std::invalid_argument("MULTITASK_PROMPT_TUNING: " + path + " has no '" + key +
                                "' (is it a multitask prompt tuning adapter?)");
  auto t = f.get(key).to(at::kFloat);
  if (t.sizes() != shape)
    throw std::invalid_argument("MULTITASK_PROMPT_TUNING: " + path + ": '" + key + "' has shape " +
                                c10::str(t.sizes()) + " but this adapter needs " + c10::str(shape));
  return t.clone();
}

// HF's MultitaskPromptEmbedding init from the source tasks' file: the shared prompt, and
// one task's factors or their average (which the target, of one task, takes as its own).
void load_source(const MultitaskPromptTuningConfig& c, MultitaskSoftPrompt& p) {
  const auto& path = c.prompt_tuning_init_state_dict_path;
  if (path.size() < 12 || path.compare(path.size() - 12, 12, ".safetensors") != 0)
    throw std::invalid_argument("MULTITASK_PROMPT_TUNING: prompt_tuning_init_state_dict_path must name a "
                                ".safetensors file (got '" + path + "')");
  SafetensorsFile f(path);
  p.embedding = source_tensor(f, path, "prompt_embeddings", p.embedding.sizes());
  if (c.prompt_tuning_init == "ONLY_SOURCE_SHARED") return;
  if (c.num_tasks != 1)
    throw std::invalid_argument("MULTITASK_PROMPT_TUNING: " + c.prompt_tuning_init +
                                " makes one task's factors; num_tasks must be 1, got " + std::to_string(c.num_tasks));
  auto cols = f.contains("prefix_task_cols") ? f.get("prefix_task_cols").to(at::kFloat) : at::Tensor();
  auto rows = f.contains("prefix_task_rows") ? f.get("prefix_task_rows").to(at::kFloat) : at::Tensor();
  if (!cols.defined() || !rows.defined() || cols.dim() != 3 || rows.dim() != 3)
    throw std::invalid_argument("MULTITASK_PROMPT_TUNING: " + path +
                                " needs prefix_task_cols and prefix_task_rows [tasks, ...]");
  if (c.prompt_tuning_init == "AVERAGE_SOURCE_TASKS") {
    cols = cols.mean(0, true);
    rows = rows.mean(0, true);
  } else {
    if (c.prompt_tuning_init_task < 0 || c.prompt_tuning_init_task >= cols.size(0))
      throw std::invalid_argument("MULTITASK_PROMPT_TUNING: prompt_tuning_init_task " +
                                  std::to_string(c.prompt_tuning_init_task) + " is not a task of " + path + " (" +
                                  std::to_string(cols.size(0)) + " tasks)");
    cols = cols.narrow(0, c.prompt_tuning_init_task, 1);
    rows = rows.narrow(0, c.prompt_tuning_init_task, 1);
  }
  for (auto [t, key, dst] : {std::tuple{cols, "prefix_task_cols", &p.task_cols},
                             std::tuple{rows, "prefix_task_rows", &p.task_rows}}) {
    if (t.sizes() != dst->sizes())
      throw std::invalid_argument("MULTITASK_PROMPT_TUNING: " + path + ": '" + key + "' gives " +
                                  c10::str(t.sizes()) + " but this adapter needs " + c10::str(dst->sizes()));
    *dst = t.contiguous().clone();
  }
}

}  // namespace

MultitaskPromptTuningConfig MultitaskPromptTuningConfig::from_json(const ojson& j, const std::string& where,
                                                                   std::vector<std::string>* unknown) {
  MultitaskPromptTuningConfig c;
  ConfigFields f(j, mpt_defaults(), "MULTITASK_PROMPT_TUNING", where, unknown, c);
  read_sizes(f, c);
  c.prompt_tuning_init = f.get<std::string>("prompt_tuning_init");
  if (!f.is_null("prompt_tuning_init_text")) c.prompt_tuning_init_text = f.get<std::string>("prompt_tuning_init_text");
  if (!f.is_null("tokenizer_name_or_path")) c.tokenizer_name_or_path = f.get<std::string>("tokenizer_name_or_path");
  if (!f.is_null("prompt_tuning_init_state_dict_path"))
    c.prompt_tuning_init_state_dict_path = f.get<std::string>("prompt_tuning_init_state_dict_path");
  c.prompt_tuning_init_task = f.is_null("prompt_tuning_init_task") ? 0 : f.get<int64_t>("prompt_tuning_init_task");
  c.num_ranks = f.get<int64_t>("num_ranks");
  c.num_tasks = f.get<int64_t>("num_tasks");
  const auto& init = c.prompt_tuning_init;
  if (init != "RANDOM" && init != "SAMPLE_VOCAB" && init != "TEXT" && !from_source(init))
    f.fail("prompt_tuning_init must be RANDOM, TEXT, SAMPLE_VOCAB, AVERAGE_SOURCE_TASKS, EXACT_SOURCE_TASK or "
           "ONLY_SOURCE_SHARED, got '" + init + "'");
  if (from_source(init) && c.prompt_tuning_init_state_dict_path.empty())
    f.fail("prompt_tuning_init " + init + " needs prompt_tuning_init_state_dict_path");
  if (c.num_ranks <= 0) f.fail("'num_ranks' must be positive, got " + std::to_string(c.num_ranks));
  if (c.num_tasks <= 0) f.fail("'num_tasks' must be positive, got " + std::to_string(c.num_tasks));
  f.require_default("tokenizer_kwargs");
  return c;
}

ojson MultitaskPromptTuningConfig::to_json() const {
  ojson fields = size_fields(*this);
  auto or_null = [](const std::string& s) { return s.empty() ? ojson() : ojson(s); };
  fields["prompt_tuning_init"] = prompt_tuning_init;
  fields["prompt_tuning_init_text"] = or_null(prompt_tuning_init_text);
  fields["tokenizer_name_or_path"] = or_null(tokenizer_name_or_path);
  fields["prompt_tuning_init_state_dict_path"] = or_null(prompt_tuning_init_state_dict_path);
  fields["prompt_tuning_init_task"] = prompt_tuning_init_task;
  fields["num_ranks"] = num_ranks;
  fields["num_tasks"] = num_tasks;
  return config_json(*this, mpt_defaults(), fields);
}

std::shared_ptr<InputAdapter> MultitaskPromptTuningConfig::make_input_adapter(Model& model, at::Generator& gen) const {
  check_token_dim(*this, model);
  check_submodules(*this, model);
  if (num_transformer_submodules == 2)
    throw std::invalid_argument("MULTITASK_PROMPT_TUNING: num_transformer_submodules 2 (HF's default for "
                                "SEQ_2_SEQ_LM) also puts prompts before the decoder's input, which is not supported "
                                "yet; set num_transformer_submodules 1 (prompts before the encoder's input)");
  const int64_t rows = num_virtual_tokens * num_transformer_submodules;
  auto a = std::make_shared<MultitaskSoftPrompt>(num_virtual_tokens, token_dim, rows, num_tasks, num_ranks);
  // HF's order: the shared prompt (PromptEmbedding's init), then the factors ~ N(0, 0.02).
  a->embedding = initial_prompt_rows(*this, model, rows, gen);
  const auto f32 = at::TensorOptions(at::kFloat);
  a->task_cols = at::normal(0.0, 0.02, {num_tasks, rows, num_ranks}, gen, f32);
  a->task_rows = at::normal(0.0, 0.02, {num_tasks, num_ranks, token_dim}, gen, f32);
  if (from_source(prompt_tuning_init)) load_source(*this, *a);
  a->to(device_of(model));
  return a;
}

namespace {
[[maybe_unused]] const bool kRegistered = register_method<MultitaskPromptTuningConfig>("MULTITASK_PROMPT_TUNING");
}  // namespace

}  // namespace peft
