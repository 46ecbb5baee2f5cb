// Trainable tokens (HF PEFT's TRAINABLE_TOKENS, and LoRA's trainable_token_indices):
// only the chosen rows of a token embedding train. The adapter holds those rows' new
// values, [n_tokens, dim] ("trainable_tokens_delta": HF's name, though it holds values,
// not differences, initialized to the base rows), and the layer computes as if they were
// copied into the weight (HF's weight.index_copy). With tied embeddings the output head
// (lm_head) sees the same rows: its adapter shares the embedding's, as HF ties its
// TrainableTokensLayer to the embedding's.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "peft/tuner.h"

namespace peft {

// The rows one adapter replaces, shared by the layer that owns them (the input embedding)
// and the layers tied to it.
struct TokenRows {
  std::vector<int64_t> indices;  // token ids, as the config lists them
  at::Tensor index;              // int64 [n]
  at::Tensor delta;              // [n, dim]: the rows' trained values (fp32)
  at::Tensor original;           // [n, dim]: the base rows, for unmerge (not saved)
};

struct TokenPlan;  // src/tuners/trainable_tokens/plan.h: which layers get which rows

struct TrainableTokensConfig : AdapterConfig {
  std::vector<int64_t> token_indices;
  // True (HF's default): the rows start as the base rows (a no-op until trained);
  // false: N(0, 1).
  bool init_weights = true;

  static TrainableTokensConfig from_json(const nlohmann::ordered_json& j, const std::string& where,
                                         std::vector<std::string>* unknown_keys = nullptr);
  std::string peft_type() const override { return "TRAINABLE_TOKENS"; }
  std::unique_ptr<AdapterConfig> clone() const override { return std::make_unique<TrainableTokensConfig>(*this); }
  nlohmann::ordered_json to_json() const override;
  // No target_modules: the input embedding's name, saved as HF saves it (a regex string).
  void resolve(const Model& model) override;
  // The targets, plus the layers tied to the input embedding when it is a target.
  NamedModules layer_targets(Model& model) const override;
  std::shared_ptr<LayerAdapter> make_layer_adapter(const std::string& path, Module& module,
                                                   at::Generator& gen) const override;

 private:
  // Made by layer_targets for one add_adapter (configs are cloned per adapter), read by
  // make_layer_adapter: tied layers must share the rows of the embedding's adapter.
  mutable std::shared_ptr<TokenPlan> plan_;
};

class TrainableTokensLayer : public LayerAdapter {
 public:
  // `key`: the file key below the layer's path ("trainable_tokens_delta", LoRA's
  // "token_adapter.trainable_tokens_delta"), or "" where the layer saves nothing (LoRA's
  // tied layers). `owner`: false where the rows are a tied layer's source's.
  TrainableTokensLayer(AdaptableLayer* host, std::shared_ptr<TokenRows> rows, bool owner, const std::string& key);
  std::string type_name() const override { return "TrainableTokensLayer"; }
  at::Tensor forward(const at::Tensor& x, const at::Tensor& out) override;
  // HF's set_scale touches LoRA layers only; the token rows are not scaled.
  bool set_scale(double) override { return true; }
  void merge() override;
  void unmerge() override;
  std::vector<at::Tensor*> trainable_slots() override;

  std::shared_ptr<TokenRows> rows;
  bool owner;

 private:
  at::Tensor embedding_forward(const at::Tensor& ids, const at::Tensor& out);
  at::Tensor head_forward(const at::Tensor& x, const at::Tensor& out);
  at::Tensor position_;  // embedding hosts: token id -> its row in delta, or -1
};

}  // namespace peft
