// What every causal LM here shares: a decoder body, then lm_head, tied to the input
// embedding when config.json's tie_word_embeddings says so.
#pragma once

#include "peft/layers.h"
#include "peft/model.h"

namespace peft {

class CausalLMBase : public Model {
 public:
  TaskKind task() const override { return TaskKind::kCausalLM; }
  ModelOutputs run(const ModelInputs& in) override {
    ModelOutputs out;
    out.last_hidden_state = body_forward(in);
    if (!in.skip_logits) out.logits = lm_head->forward(out.last_hidden_state);
    return out;
  }
  std::vector<std::string> tied_parameter_names() const override {
    return tie_ ? std::vector<std::string>{"lm_head.weight"} : std::vector<std::string>{};
  }
  Embedding* input_embeddings() override { return &input_embedding(); }
  AdaptableLayer* output_layer() override { return lm_head.get(); }
  void tie_weights() override {
    if (tie_) lm_head->weight = input_embedding().weight;
  }
  std::shared_ptr<Linear> lm_head;

 protected:
  CausalLMBase(const nlohmann::json& j, bool tie) : Model(j), tie_(tie) {}
  // Registers lm_head after the body, as transformers orders them (Phi's has a bias).
  void add_lm_head(int64_t hidden, int64_t vocab, bool bias = false) {
    lm_head = register_module("lm_head", std::make_shared<Linear>(hidden, vocab, bias));
  }
  virtual at::Tensor body_forward(const ModelInputs& in) = 0;
  virtual Embedding& input_embedding() = 0;

 private:
  bool tie_;
};

}  // namespace peft
