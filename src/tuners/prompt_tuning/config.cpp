// Prompt tuning: config and injection.
#include <ATen/ATen.h>

#include <cmath>
#include <filesystem>

#include "tuners/registry.h"
#include "peft/layers.h"
#include "peft/prompt.h"
#include "peft/tokenizer.h"
#include "tuners/prompt_learning/prompt_learning.h"

namespace peft {

namespace {

// HF PEFT 0.21's fields.
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
}  // namespace

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

at::Tensor initial_prompt_rows(const PromptTuningConfig& c, Model& model, int64_t n, at::Generator& gen) {
  if (c.prompt_tuning_init != "SAMPLE_VOCAB" && c.prompt_tuning_init != "TEXT")
    return at::randn({n, c.token_dim}, gen, at::TensorOptions(at::kFloat));  // nn.Embedding's init
  Embedding* emb = model.input_embeddings();
  std::vector<int64_t> ids;
  if (c.prompt_tuning_init == "SAMPLE_VOCAB") {
    auto r = at::randint(emb->num_embeddings, {n}, gen, at::TensorOptions(at::kLong));
    ids.assign(r.data_ptr<int64_t>(), r.data_ptr<int64_t>() + n);
  } else {
    // HF: the init text's ids (special tokens included), cut or repeated to n.
    namespace fs = std::filesystem;
    fs::path tok = c.tokenizer_name_or_path;
    if (fs::is_directory(tok)) tok /= "tokenizer.json";
    if (c.tokenizer_name_or_path.empty() || !fs::exists(tok))
      throw std::invalid_argument(c.peft_type() + ": prompt_tuning_init TEXT needs tokenizer_name_or_path, a local "
                                  "folder with tokenizer.json (got '" + c.tokenizer_name_or_path + "')");
    if (c.prompt_tuning_init_text.empty())
      throw std::invalid_argument(c.peft_type() + ": prompt_tuning_init_text is empty");
    auto text_ids = Tokenizer::from_file(tok.string()).encode(c.prompt_tuning_init_text).ids;
    if (text_ids.empty()) throw std::invalid_argument(c.peft_type() + ": prompt_tuning_init_text has no tokens");
    for (int64_t i = 0; i < n; ++i) ids.push_back(text_ids[i % text_ids.size()]);
  }
  return at::embedding(emb->weight.detach().to(at::kCPU, at::kFloat), at::tensor(ids, at::kLong)).clone();
}

std::shared_ptr<InputAdapter> PromptTuningConfig::make_input_adapter(Model& model, at::Generator& gen) const {
  check_token_dim(*this, model);
  check_submodules(*this, model);
  // HF's rows: the virtual tokens of every transformer submodule (encoder-decoder: 2n).
  const int64_t n = num_virtual_tokens * num_transformer_submodules;
  auto a = std::make_shared<SoftPrompt>(num_virtual_tokens, token_dim, "prompt_embeddings", n);
  a->embedding = initial_prompt_rows(*this, model, n, gen);
  a->to(device_of(model));
  return a;
}


namespace {
[[maybe_unused]] const bool kPromptTuningRegistered = register_method<PromptTuningConfig>("PROMPT_TUNING");
}  // namespace

}  // namespace peft
