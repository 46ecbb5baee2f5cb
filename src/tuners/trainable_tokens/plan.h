// Which layers of a model get trainable token rows for one adapter, and which of them
// follow the input embedding's rows (weight tying): TRAINABLE_TOKENS' targets, or LoRA's
// trainable_token_indices, with HF PEFT 0.21's rules (TrainableTokensModel.inject_adapter,
// utils/other.py's set_additional_trainable_modules).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "peft/trainable_tokens.h"
#include "tuners/config_fields.h"

namespace peft {

struct TokenPlan {
  struct Entry {
    std::string path;
    std::vector<int64_t> indices;
    bool tied;  // shares the input embedding's rows
  };
  std::vector<Entry> entries;  // owners first (model order), then tied layers
  std::string key;             // file key below a layer's path
  bool save_tied = false;      // TRAINABLE_TOKENS files a tied layer's rows again; LoRA does not
  bool init_weights = true;
  std::string embedding;              // the input embedding's path: the tied layers' source
  std::shared_ptr<TokenRows> source;  // its rows, once made

  const Entry* find(const std::string& path) const;
  NamedModules modules(Model& model) const;
  // The adapter for `path` (an entry); the embedding's must be made before tied ones.
  std::shared_ptr<LayerAdapter> make(const std::string& path, Module& m, at::Generator& gen);
};

// The input embedding's module path (HF's _get_input_embeddings_name), or `fallback`.
std::string input_embedding_path(Model& model, const std::string& fallback);
// Paths of the modules whose weight is the input embedding's (lm_head with
// tie_word_embeddings); none when the model does not tie them.
std::vector<std::string> tied_to_input_embedding(Model& model);

// TRAINABLE_TOKENS: `targets` take `indices`; with tied weights and the input embedding
// among them, the tied layers share its rows (saved under their own keys too, as HF does).
std::shared_ptr<TokenPlan> plan_trainable_tokens(Model& model, const NamedModules& targets,
                                                 const std::vector<int64_t>& indices, bool init_weights);
// LoRA's trainable_token_indices: a list (the input embedding's rows) or {module name
// suffix: list}. Keys under "token_adapter."; tied layers save nothing. Errors name the
// field: an entry also in modules_to_save, a name matching no module, tied layers with
// different indices under ensure_weight_tying.
std::shared_ptr<TokenPlan> plan_token_indices(Model& model, const ojson& spec, bool ensure_weight_tying,
                                              const std::vector<std::string>& modules_to_save);

// A list of token ids (non-negative integers); errors name `what`.
std::vector<int64_t> read_token_list(const ojson& v, const std::string& what);
// LoRA's trainable_token_indices value: null, a list, or {name: list}.
void check_token_indices_spec(const ojson& v, const std::string& what);

}  // namespace peft
