// What the soft-prompt methods share (HF PEFT's PromptLearningConfig and its helpers),
// and the input adapter prompt tuning and P-tuning put before the input embeddings.
#pragma once

#include <ATen/core/Tensor.h>

#include <initializer_list>

#include "peft/model.h"
#include "peft/prompt.h"
#include "peft/seq2seq.h"
#include "tuners/config_fields.h"

namespace peft {

// Shared by the soft-prompt methods' configs.
int64_t int_or_zero(const ConfigFields& f, const char* key);
void read_sizes(const ConfigFields& f, PromptLearningConfig& c);   // HF's PromptLearningConfig fields
nlohmann::ordered_json size_fields(const PromptLearningConfig& c);
at::Device device_of(Model& model);
int64_t model_int(const Model& model, std::initializer_list<const char*> keys);  // first key config.json has
// A config's sizes (from a file, perhaps for another model) must be the model's.
void check_size(const std::string& method, const char* field, int64_t config, int64_t model_value,
                const std::string& model);
void check_token_dim(const PromptLearningConfig& c, Model& model);
// Whether a config file left `key` out or null (HF's None); false for a config made in code.
bool unset_in_source(const PromptLearningConfig& c, const char* key);
// num_transformer_submodules: 2 (encoder and decoder) on encoder-decoder models only.
void check_submodules(const PromptLearningConfig& c, Model& model);
// Prompt tuning's initial rows [n, token_dim]: random (nn.Embedding's init), sampled
// vocabulary embeddings or the init text's (HF's PromptEmbedding); any other init: random.
at::Tensor initial_prompt_rows(const PromptTuningConfig& c, Model& model, int64_t n, at::Generator& gen);
// The attention mask with n ones (the virtual tokens) in front.
at::Tensor prepend_ones(const at::Tensor& mask, int64_t n);

// Virtual token embeddings [n, dim] prepended to the input embeddings. The first forward
// of a generation (empty cache) prepends them; later steps only extend the mask and
// positions, whose count includes them.
// Encoder-decoder models (HF PEFT's num_transformer_submodules 2) hold 2n rows, as HF
// does, and the encoder's input gets the first n; the decoder's inputs stay as they are
// (HF's PeftModelForSeq2SeqLM never uses the other n for prompt tuning and P-tuning).
class SoftPrompt : public InputAdapter, public Seq2SeqInputAdapter {
 public:
  // `slot`: the parameter's name ("prompt_embeddings" as saved; P-tuning trains
  // "embedding.weight" through its encoder instead). `rows`: n times the number of
  // transformer submodules (0: n).
  SoftPrompt(int64_t n, int64_t dim, const std::string& slot = "prompt_embeddings", int64_t rows = 0);
  std::string type_name() const override { return "SoftPrompt"; }
  int64_t prepare(Model& model, ModelInputs& in) override;
  void prepare_seq2seq(Model& model, Seq2SeqInputs& in) override;
  std::vector<std::pair<std::string, at::Tensor>> saved_tensors() override;
  virtual at::Tensor prompts() { return embedding; }  // [rows, dim]
  // The n prompts each of a batch's b rows gets: [b, n, dim] (the same for every row,
  // unless a multitask prompt routes rows by task).
  virtual at::Tensor batch_prompts(int64_t b) { return prompts().narrow(0, 0, n).unsqueeze(0).expand({b, n, dim}); }
  at::Tensor row_prompts() override { return prompts().narrow(0, 0, n); }

  at::Tensor embedding;
  int64_t n, dim, rows;
};

}  // namespace peft
