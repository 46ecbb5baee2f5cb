// P-tuning: config and injection.
#include <ATen/ATen.h>

#include <cmath>

#include "tuners/registry.h"
#include "peft/prompt.h"
#include "tuners/p_tuning/layer.h"

namespace peft {

namespace {

// HF PEFT 0.21's fields.
const ojson& p_tuning_defaults() {
  static const auto j = ojson::parse(R"({
    "auto_mapping": null, "base_model_name_or_path": null, "encoder_dropout": 0.0, "encoder_hidden_size": null,
    "encoder_num_layers": 2, "encoder_reparameterization_type": "MLP", "inference_mode": true,
    "modules_to_save": null, "num_attention_heads": null, "num_layers": null, "num_transformer_submodules": null,
    "num_virtual_tokens": null, "peft_type": "P_TUNING", "peft_version": "0.21.2", "revision": null,
    "task_type": null, "token_dim": null
  })");
  return j;
}
}  // namespace

PromptEncoderConfig PromptEncoderConfig::from_json(const ojson& j, const std::string& where,
                                                   std::vector<std::string>* unknown) {
  PromptEncoderConfig c;
  ConfigFields f(j, p_tuning_defaults(), "P_TUNING", where, unknown, c);
  read_sizes(f, c);
  c.encoder_reparameterization_type = f.get<std::string>("encoder_reparameterization_type");
  c.encoder_hidden_size = int_or_zero(f, "encoder_hidden_size");
  c.encoder_num_layers = f.get<int64_t>("encoder_num_layers");
  c.encoder_dropout = f.get<double>("encoder_dropout");
  if (c.encoder_reparameterization_type != "MLP" && c.encoder_reparameterization_type != "LSTM")
    f.fail("encoder_reparameterization_type must be MLP or LSTM, got '" + c.encoder_reparameterization_type + "'");
  return c;
}

ojson PromptEncoderConfig::to_json() const {
  ojson fields = size_fields(*this);
  fields["encoder_reparameterization_type"] = encoder_reparameterization_type;
  fields["encoder_hidden_size"] = encoder_hidden_size > 0 ? ojson(encoder_hidden_size) : ojson(token_dim);
  fields["encoder_num_layers"] = encoder_num_layers;
  fields["encoder_dropout"] = encoder_dropout;
  return config_json(*this, p_tuning_defaults(), fields);
}

std::shared_ptr<InputAdapter> PromptEncoderConfig::make_input_adapter(Model& model, at::Generator& gen) const {
  check_token_dim(*this, model);
  check_submodules(*this, model);
  // HF's encoder runs over the virtual tokens of every transformer submodule (2n on
  // encoder-decoder models; the LSTM reads all of them), the encoder's input gets the first n.
  const int64_t v = num_virtual_tokens, n = v * num_transformer_submodules;
  const auto opts = at::TensorOptions(at::kFloat);
  std::shared_ptr<SoftPrompt> a;
  if (inference_mode) {
    a = std::make_shared<SoftPrompt>(v, token_dim, "prompt_embeddings", n);
  } else {
    const int64_t hidden = encoder_hidden_size > 0 ? encoder_hidden_size : token_dim;
    auto enc = std::make_shared<PromptEncoder>(v, token_dim, hidden, encoder_reparameterization_type == "LSTM",
                                               encoder_num_layers, encoder_dropout, n);
    // torch's defaults: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for Linear and LSTM.
    for (auto* list : {&enc->mlp, &enc->lstm})
      for (size_t i = 0; i < list->size(); ++i) {
        auto& t = (*list)[i];
        const int64_t fan = list == &enc->mlp ? (i % 2 == 0 ? t.size(1) : (*list)[i - 1].size(1)) : hidden;
        const double bound = 1.0 / std::sqrt(static_cast<double>(fan));
        t = at::rand(t.sizes(), gen, opts) * (2 * bound) - bound;
      }
    a = enc;
  }
  a->embedding = at::randn({n, token_dim}, gen, opts);
  a->to(device_of(model));
  return a;
}


namespace {
[[maybe_unused]] const bool kPromptEncoderRegistered = register_method<PromptEncoderConfig>("P_TUNING");
}  // namespace

}  // namespace peft
