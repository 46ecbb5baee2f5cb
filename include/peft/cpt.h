// CPT, Context-aware Prompt Tuning (Blau et al. 2024, HF PEFT 0.21's CPTConfig): the soft
// prompt is an in-context template, cpt_token_ids (e.g. "input: x1 output: y1 ..."),
// whose word embeddings stay frozen; a trained delta per token is added to them, kept
// inside an L2 ball per token type (cpt_tokens_type_mask: type % 4 == 1 and 3 are format
// tokens with radius opt_projection_format_epsilon, 2 input tokens with
// opt_projection_epsilon, both times sqrt(token_dim / 2048); 0 and the labels, type % 4 ==
// 0, radius 1e-10), and only input and format tokens receive gradients. The loss also
// scores the template's own label tokens (type % 4 == 0), each example's labels where its
// per-token "input_type_mask" says (HF's batches carry it; data lines may too), and with
// opt_weighted_loss_type "decay" weighs older label groups by powers of
// opt_loss_decay_factor. Files are HF PEFT's: "prompt_embeddings" = embedding + delta.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "peft/prompt.h"

namespace peft {

struct CPTConfig : PromptLearningConfig {
  std::vector<int64_t> cpt_token_ids{0};         // HF's default [0]; num_virtual_tokens is its length
  std::vector<int64_t> cpt_mask;                 // empty: ones (HF keeps it, uses nothing of it)
  std::vector<int64_t> cpt_tokens_type_mask;     // empty: ones
  std::string opt_weighted_loss_type = "none";   // none | decay
  double opt_loss_decay_factor = 1.0;
  double opt_projection_epsilon = 0.1;           // input tokens (type % 4 == 2)
  double opt_projection_format_epsilon = 0.1;    // format tokens (type % 4 == 1, 3)
  std::string tokenizer_name_or_path;            // kept for HF's file; unused

  static CPTConfig from_json(const nlohmann::ordered_json& j, const std::string& where,
                             std::vector<std::string>* unknown_keys = nullptr);
  std::string peft_type() const override { return "CPT"; }
  std::unique_ptr<AdapterConfig> clone() const override { return std::make_unique<CPTConfig>(*this); }
  nlohmann::ordered_json to_json() const override;
  // As PromptLearningConfig, one transformer submodule; empty masks become ones and
  // num_virtual_tokens 0 the template's length (a config made in code).
  void resolve(const Model& model) override;
  // Training: the frozen rows are the word embeddings of cpt_token_ids, the delta zeros.
  std::shared_ptr<InputAdapter> make_input_adapter(Model& model, at::Generator& gen) const override;
  // HF's __post_init__ checks: CAUSAL_LM, equal lengths, a known loss type. Throws
  // std::invalid_argument naming the field.
  void validate() const;
};

// HF's PeftModelForCausalLM forward with labels when the model's active input adapter is
// CPT (else an undefined tensor): the template's prompts before the inputs' embeddings,
// the labels [b, s] after the template's own (cpt_token_ids), kept where the type is a
// label type (> 0, % 4 == 0), the inputs' types [b, s] (undefined: HF's default, 4
// everywhere) shifted by the template's largest; then CPTEmbedding.calculate_loss: the
// next-token cross-entropy of the kept labels, weighted per row by opt_loss_decay_factor
// ^ (rank of its label group from the last) under "decay", averaged over the kept labels.
at::Tensor cpt_loss(Model& model, const at::Tensor& input_ids, const at::Tensor& attention_mask,
                    const at::Tensor& labels, const at::Tensor& input_type_mask, bool checkpoint_layers = false);

}  // namespace peft
