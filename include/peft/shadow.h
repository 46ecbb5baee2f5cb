// ShadowPEFT (HF PEFT 0.21's SHADOW) for causal LMs: a small trainable "shadow" network runs
// beside the frozen decoder. A mirror backbone (the base decoder class with
// shadow_num_hidden_layers layers, 1 by default, and optionally other sizes), fed the base's
// own input embeddings when share_embeddings and the widths match, gives the initial shadow
// state s⁰ = P(backbone(x)) (P a bias-free Linear where the widths differ, else the
// identity). At every adapted decoder block l, with h the block's input and s the state:
//   h' = h + α · W_up(W_down(Dropout(h − s)))          (injected into the block)
//   o  = block(h')
//   s  = (1 − g) ⊙ s + g ⊙ T(o),  g = σ(G(o))           (T, G: Linear-GELU-Linear, width u)
// and o goes on to the next block. W_up starts at 0 (init_weights), so a new adapter starts
// as the base. Not mergeable (the adaptation depends on the input). With task_type
// CAUSAL_LM, training adds auxiliary_loss_weight times the LM loss of lm_head(s⁰).
// Files hold HF's keys, the adapter name always "default" inside them:
//   base_model.shadow_backbone.default.<backbone params>   (Llama: no embed_tokens when shared)
//   base_model.shadow_projection.default.weight            (widths differ)
//   base_model.model.<block>.shadow_down.default.weight, shadow_up..., and
//   shadow_update_transform.default.{0,2}.{weight,bias}, shadow_update_gate.default.{0,2}...
// Supported bases: the Llama family (LlamaForCausalLM: Llama, Mistral, Qwen2, Qwen3) and
// GPT2LMHeadModel; pretrained shadow checkpoints (shadow_model other than "mirror"),
// diffusion transformers and sequence classification are refused by name.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "peft/side_cache.h"
#include "peft/tuner.h"

namespace peft {

struct ShadowConfig : AdapterConfig {
  int64_t r = 8;
  double shadow_alpha = 0.1;
  double shadow_dropout = 0.2;
  bool init_weights = true;  // W_up = 0
  std::string shadow_model = "mirror";
  std::optional<int64_t> shadow_num_hidden_layers;  // unset: 1
  std::optional<int64_t> shadow_hidden_size;        // unset: the base's
  std::optional<int64_t> shadow_num_attention_heads;
  std::optional<int64_t> shadow_intermediate_size;
  bool share_embeddings = true;
  std::optional<int64_t> update_hidden_size;  // unset: r
  double auxiliary_loss_weight = 0.05;

  static ShadowConfig from_json(const nlohmann::ordered_json& j, const std::string& where,
                                std::vector<std::string>* unknown_keys = nullptr);
  std::string peft_type() const override { return "SHADOW"; }
  std::unique_ptr<AdapterConfig> clone() const override { return std::make_unique<ShadowConfig>(*this); }
  nlohmann::ordered_json to_json() const override;
  bool mergeable() const override { return false; }
  // Refuses unsupported bases by name; null target_modules become every decoder block's
  // name (as HF's _prepare_adapter_config writes them).
  void resolve(const Model& model) override;
  // The backbone, projection and per-block networks, drawn from `gen` in HF's order (the
  // backbone as transformers initializes a fresh model, then torch's Linear inits).
  std::shared_ptr<InputAdapter> make_input_adapter(Model& model, at::Generator& gen) const override;
};

class ShadowBlock;
class ShadowBackbone;

// The shadow network of one adapter. prepare() computes s⁰ and installs the per-block
// hooks (ModelInputs::before_layer / after_layer) for the forward.
class ShadowAdapter : public InputAdapter {
 public:
  ShadowAdapter(Model& model, const ShadowConfig& c, at::Generator& gen);
  ~ShadowAdapter() override;
  std::string type_name() const override { return "ShadowModel"; }
  int64_t prepare(Model& model, ModelInputs& in) override;
  std::vector<std::pair<std::string, at::Tensor>> saved_tensors() override;
  // weight × CE(lm_head(s⁰)[:, :-1], labels[:, 1:]) (ignore_index -100) of the last
  // forward; undefined without one, with weight 0 or task_type other than CAUSAL_LM.
  at::Tensor aux_loss(const at::Tensor& labels) const override;
  // The unweighted shadow-head loss (HF's shadow_auxiliary_loss); undefined as above.
  at::Tensor shadow_loss(const at::Tensor& labels) const;
  const at::Tensor& initial_state() const { return seed_; }  // s⁰ of the last forward
  const at::Tensor& final_state() const { return state_; }   // s after the last adapted block
  // The adapted blocks' layer indices (contiguous).
  int64_t first_block() const { return first_; }
  int64_t last_block() const { return last_; }

 private:
  at::Tensor inject(size_t layer, const at::Tensor& h);
  void update(size_t layer, const at::Tensor& out);

  std::shared_ptr<ShadowBackbone> backbone_;
  std::shared_ptr<Module> projection_;        // Linear or nullptr (identity)
  std::vector<std::shared_ptr<ShadowBlock>> blocks_;  // by layer index; null: not adapted
  int64_t first_ = -1, last_ = -1;
  double alpha_, dropout_, aux_weight_;
  bool share_;
  Embedding* base_embedding_;
  AdaptableLayer* head_;  // lm_head for the auxiliary loss, or nullptr
  at::Tensor seed_, state_;
  // The shadow backbone's own keys/values, kept in step with the base cache of a decode.
  SideCache shadow_cache_;
};

}  // namespace peft
