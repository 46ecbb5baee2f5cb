// CARTRIDGE (Eyuboglu et al. 2025, HF PEFT's CartridgeConfig): a trained KV cache. Like
// prefix tuning without a projection, the keys and values of num_virtual_tokens positions
// per layer are the parameters themselves, served through the KV cache; the first
// num_frozen_tokens positions stay fixed (the paper's attention sink). Files are HF PEFT's:
// one "prompt_embeddings" [n, layers * 2 * token_dim].
#pragma once

#include <string>
#include <vector>

#include "peft/prompt.h"

namespace peft {

struct CartridgeConfig : PrefixTuningConfig {
  int64_t num_frozen_tokens = 1;

  static CartridgeConfig from_json(const nlohmann::ordered_json& j, const std::string& where,
                                   std::vector<std::string>* unknown_keys = nullptr);
  std::string peft_type() const override { return "CARTRIDGE"; }
  std::unique_ptr<AdapterConfig> clone() const override { return std::make_unique<CartridgeConfig>(*this); }
  nlohmann::ordered_json to_json() const override;
  // Keys and values sized as prefix tuning's; N(0, 1) values, the frozen rows drawn first.
  std::shared_ptr<InputAdapter> make_input_adapter(Model& model, at::Generator& gen) const override;
};

class PeftModel;
class Tokenizer;
// HF's initialize_kv_prefix_from_text for the CARTRIDGE or (projection-free) PREFIX_TUNING
// adapter `name`: the base model (adapters off) prefills `text` (as a system message through
// the tokenizer's chat template when it has one and `use_chat_template`, else plain) and the
// first num_virtual_tokens positions of its KV cache become the adapter's prefix. Throws
// std::invalid_argument naming what is missing (too few tokens, another method).
void init_kv_prefix_from_text(PeftModel& peft, const std::string& name, const Tokenizer& tokenizer,
                              const std::string& text, bool use_chat_template = true);

}  // namespace peft
