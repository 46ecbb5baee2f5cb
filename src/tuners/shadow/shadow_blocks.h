// SHADOW's internals: the decoder blocks a base model has, the mirror backbone and the
// per-block injection / update networks (include/peft/shadow.h has the method).
#pragma once

#include <ATen/core/Generator.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "peft/layers.h"
#include "peft/model.h"
#include "peft/shadow.h"

namespace peft {

class LlamaModel;
class GPT2Model;

namespace shadow {

struct BlockRef {
  std::string path;  // "model.layers.3", "transformer.h.3"
  int64_t index;
};
// The decoder blocks of a supported base, in order; refuses other models by name.
std::vector<BlockRef> decoder_blocks(Model& model);

}  // namespace shadow

// The mirror backbone: the base's body class (LlamaModel, GPT2Model) with the config's
// sizes. Its parameters are registered under transformers' names; a Llama backbone fed the
// shared base embeddings has no embed_tokens (HF deletes it), GPT-2's keeps its wte.
class ShadowBackbone : public Module {
 public:
  ShadowBackbone(Model& base, const ShadowConfig& c, at::Generator& gen);
  std::string type_name() const override { return type_; }
  // last_hidden_state [batch, seq, shadow hidden].
  at::Tensor forward(const ModelInputs& in);
  int64_t hidden_size() const { return hidden_; }
  bool can_share() const { return can_share_; }

 private:
  std::shared_ptr<LlamaModel> llama_;
  std::shared_ptr<GPT2Model> gpt2_;
  std::string type_;
  int64_t hidden_ = 0;
  bool can_share_ = false;
};

// One adapted block's networks (HF's ShadowLayer): W_down [r, d], W_up [d, r] (no bias),
// T and G: Linear(d, u) - GELU - Linear(u, d). Parameter names below the block's key:
// "shadow_down.default.weight", "shadow_update_transform.default.0.bias", ...
class ShadowBlock : public Module {
 public:
  // torch's nn.Linear inits drawn from `gen` in HF's order; W_up zero with init_weights.
  ShadowBlock(int64_t d, const ShadowConfig& c, at::Generator& gen);
  std::string type_name() const override { return "ShadowLayer"; }
  // h + alpha · W_up(W_down(dropout(h − s))), in h's dtype.
  at::Tensor inject(const at::Tensor& h, const at::Tensor& s, double alpha, double dropout, bool training) const;
  // (1 − g) s + g T(o), g = σ(G(o)), in s's dtype.
  at::Tensor update(const at::Tensor& o, const at::Tensor& s) const;
  std::shared_ptr<Linear> down, up, t0, t2, g0, g2;
};

}  // namespace peft
