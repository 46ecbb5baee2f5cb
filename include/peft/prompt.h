// Soft prompts: trained virtual tokens instead of trained weights.
//  - prompt tuning (Lester et al. 2021): embeddings prepended to the input embeddings;
//  - P-tuning (Liu et al. 2021): the same, produced by a prompt encoder (MLP or LSTM)
//    while training; saved as the encoder's output, as HF PEFT does;
//  - prefix tuning (Li & Liang 2021): keys and values prepended in every attention layer
//    (through the KV cache), optionally through an MLP while training;
//  - visual prompt tuning (Jia et al. 2022, ViT): prompt tokens after [CLS], before the
//    first layer (shallow) or replaced before every layer (deep). Not in HF PEFT.
// Files are HF PEFT's ("prompt_embeddings"); VPT's follows their style ("vpt_prompts").
#pragma once

#include "peft/tuner.h"

namespace peft {

// HF's PromptLearningConfig: sizes of the virtual tokens, filled from the model's
// config.json when absent (as _prepare_prompt_learning_config does).
struct PromptLearningConfig : AdapterConfig {
  int64_t num_virtual_tokens = 0;
  int64_t token_dim = 0, num_attention_heads = 0, num_layers = 0;  // 0: from the model
  int64_t num_transformer_submodules = 1;
  bool mergeable() const override { return false; }
  std::string key_prefix() const override { return "base_model."; }
  // Fills the sizes from the model's config.json.
  void resolve(const Model& model) override;
};

struct PromptTuningConfig : PromptLearningConfig {
  std::string prompt_tuning_init = "RANDOM";  // RANDOM | SAMPLE_VOCAB | TEXT
  std::string prompt_tuning_init_text;
  std::string tokenizer_name_or_path;  // TEXT: a local folder with tokenizer.json

  static PromptTuningConfig from_json(const nlohmann::ordered_json& j, const std::string& where,
                                      std::vector<std::string>* unknown_keys = nullptr);
  std::string peft_type() const override { return "PROMPT_TUNING"; }
  std::unique_ptr<AdapterConfig> clone() const override { return std::make_unique<PromptTuningConfig>(*this); }
  nlohmann::ordered_json to_json() const override;
  std::shared_ptr<InputAdapter> make_input_adapter(Model& model, at::Generator& gen) const override;
};

struct PromptEncoderConfig : PromptLearningConfig {  // P_TUNING
  std::string encoder_reparameterization_type = "MLP";  // MLP | LSTM
  int64_t encoder_hidden_size = 0;                       // 0: token_dim
  int64_t encoder_num_layers = 2;                        // LSTM layers
  double encoder_dropout = 0.0;                          // LSTM dropout

  static PromptEncoderConfig from_json(const nlohmann::ordered_json& j, const std::string& where,
                                       std::vector<std::string>* unknown_keys = nullptr);
  std::string peft_type() const override { return "P_TUNING"; }
  std::unique_ptr<AdapterConfig> clone() const override { return std::make_unique<PromptEncoderConfig>(*this); }
  nlohmann::ordered_json to_json() const override;
  std::shared_ptr<InputAdapter> make_input_adapter(Model& model, at::Generator& gen) const override;
};

struct PrefixTuningConfig : PromptLearningConfig {
  int64_t encoder_hidden_size = 0;  // the projection MLP's hidden size (0: token_dim)
  bool prefix_projection = false;
  std::string init_weights;         // "" (random) | "zero"

  static PrefixTuningConfig from_json(const nlohmann::ordered_json& j, const std::string& where,
                                      std::vector<std::string>* unknown_keys = nullptr);
  std::string peft_type() const override { return "PREFIX_TUNING"; }
  std::unique_ptr<AdapterConfig> clone() const override { return std::make_unique<PrefixTuningConfig>(*this); }
  nlohmann::ordered_json to_json() const override;
  // As PromptLearningConfig, then keys and values sized by the model's key/value heads
  // (grouped-query attention), as HF PEFT writes them.
  void resolve(const Model& model) override;
  std::shared_ptr<InputAdapter> make_input_adapter(Model& model, at::Generator& gen) const override;
};

struct VPTConfig : AdapterConfig {
  int64_t num_virtual_tokens = 10;
  bool deep = false;
  // The paper's init: uniform(-v, v), v = sqrt(6 / (3 * patch_area + hidden)).
  static VPTConfig from_json(const nlohmann::ordered_json& j, const std::string& where,
                             std::vector<std::string>* unknown_keys = nullptr);
  std::string peft_type() const override { return "VPT"; }
  std::unique_ptr<AdapterConfig> clone() const override { return std::make_unique<VPTConfig>(*this); }
  nlohmann::ordered_json to_json() const override;
  std::shared_ptr<InputAdapter> make_input_adapter(Model& model, at::Generator& gen) const override;
  bool mergeable() const override { return false; }
  // ViTForImageClassification: the classifier trains too (modules_to_save) unless set.
  void resolve(const Model& model) override;
};

}  // namespace peft
