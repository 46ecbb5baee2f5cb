// What the soft-prompt methods share (HF PEFT's PromptLearningConfig and its helpers),
// and the input adapter prompt tuning and P-tuning put before the input embeddings.
#pragma once

#include <ATen/core/Tensor.h>

#include <initializer_list>

#include "peft/model.h"
#include "peft/prompt.h"
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
// The attention mask with n ones (the virtual tokens) in front.
at::Tensor prepend_ones(const at::Tensor& mask, int64_t n);

// Virtual token embeddings [n, dim] prepended to the input embeddings. The first forward
// of a generation (empty cache) prepends them; later steps only extend the mask and
// positions, whose count includes them.
class SoftPrompt : public InputAdapter {
 public:
  // `slot`: the parameter's name ("prompt_embeddings" as saved; P-tuning trains
  // "embedding.weight" through its encoder instead).
  SoftPrompt(int64_t n, int64_t dim, const std::string& slot = "prompt_embeddings");
  std::string type_name() const override { return "SoftPrompt"; }
  int64_t prepare(Model& model, ModelInputs& in) override;
  std::vector<std::pair<std::string, at::Tensor>> saved_tensors() override;
  virtual at::Tensor prompts() { return embedding; }  // [n, dim]

  at::Tensor embedding;
  int64_t n, dim;
};

}  // namespace peft
