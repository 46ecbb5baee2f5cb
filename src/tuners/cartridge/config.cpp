// CARTRIDGE: config, injection, the file reader, and the KV-prefix init from text.
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <stdexcept>

#include "peft/cartridge.h"
#include "peft/peft_model.h"
#include "peft/tokenizer.h"
#include "tuners/cartridge/encoder.h"
#include "tuners/file_tensors.h"
#include "tuners/prompt_learning/prompt_learning.h"
#include "tuners/registry.h"

namespace peft {

namespace {

// HF PEFT 0.21's fields.
const ojson& cartridge_defaults() {
  static const auto j = ojson::parse(R"({
    "auto_mapping": null, "base_model_name_or_path": null, "inference_mode": true, "modules_to_save": null,
    "num_attention_heads": null, "num_frozen_tokens": 1, "num_layers": null, "num_transformer_submodules": null,
    "num_virtual_tokens": null, "peft_type": "CARTRIDGE", "peft_version": "0.21.2", "revision": null,
    "task_type": null, "token_dim": null
  })");
  return j;
}

}  // namespace

CartridgeConfig CartridgeConfig::from_json(const ojson& j, const std::string& where, std::vector<std::string>* unknown) {
  CartridgeConfig c;
  ConfigFields f(j, cartridge_defaults(), "CARTRIDGE", where, unknown, c);
  read_sizes(f, c);
  c.num_frozen_tokens = f.get<int64_t>("num_frozen_tokens");
  if (c.num_frozen_tokens < 0) f.fail("'num_frozen_tokens' must be >= 0, got " + std::to_string(c.num_frozen_tokens));
  if (c.num_virtual_tokens > 0 && c.num_frozen_tokens > c.num_virtual_tokens)
    f.fail("'num_frozen_tokens' (" + std::to_string(c.num_frozen_tokens) + ") must be <= 'num_virtual_tokens' (" +
           std::to_string(c.num_virtual_tokens) + ")");
  return c;
}

ojson CartridgeConfig::to_json() const {
  ojson fields = size_fields(*this);
  fields["num_frozen_tokens"] = num_frozen_tokens;
  return config_json(*this, cartridge_defaults(), fields);
}

std::shared_ptr<InputAdapter> CartridgeConfig::make_input_adapter(Model& model, at::Generator& gen) const {
  if (as_seq2seq(model))  // HF's CARTRIDGE serves a decoder-only cache
    throw std::invalid_argument("CARTRIDGE: " + model.type_name() + " is an encoder-decoder model; use PREFIX_TUNING");
  const int64_t head_dim = checked_prefix_head_dim(*this, model);
  if (num_frozen_tokens > num_virtual_tokens)
    throw std::invalid_argument("CARTRIDGE: num_frozen_tokens " + std::to_string(num_frozen_tokens) +
                                " is more than num_virtual_tokens " + std::to_string(num_virtual_tokens));
  auto a = std::make_shared<CartridgeEncoder>(num_virtual_tokens, num_frozen_tokens, num_layers, num_attention_heads,
                                              head_dim);
  // HF's reset_parameters: nn.Embedding's N(0, 1), the frozen rows drawn first.
  const auto opts = at::TensorOptions(at::kFloat);
  a->frozen = at::randn(a->frozen.sizes(), gen, opts);
  a->trainable = at::randn(a->trainable.sizes(), gen, opts);
  a->to(device_of(model));
  return a;
}

void init_kv_prefix_from_text(PeftModel& peft, const std::string& name, const Tokenizer& tokenizer,
                              const std::string& text, bool use_chat_template) {
  const auto& cfg = peft.config(name);
  auto* prefix = dynamic_cast<PrefixEncoder*>(peft.input_adapter(name));
  if (!prefix || (cfg.peft_type() != "CARTRIDGE" && cfg.peft_type() != "PREFIX_TUNING"))
    throw std::invalid_argument("a KV-prefix init needs a CARTRIDGE or PREFIX_TUNING adapter; '" + name + "' is " +
                                cfg.peft_type());
  if (prefix->projection)
    throw std::invalid_argument("a KV-prefix init does not fit prefix tuning with prefix_projection");
  const bool chat = use_chat_template && tokenizer.chat_template().has_value();
  const auto ids = chat ? tokenizer.encode(tokenizer.apply_chat_template(
                                               nlohmann::ordered_json::array({{{"role", "system"}, {"content", text}}}),
                                               false),
                                           /*add_special_tokens=*/false)
                                .ids
                        : tokenizer.encode(text).ids;
  if (static_cast<int64_t>(ids.size()) < prefix->n)
    throw std::invalid_argument("a KV-prefix init needs at least " + std::to_string(prefix->n) +
                                " tokens (num_virtual_tokens); the text gives " + std::to_string(ids.size()));
  KVCache cache;
  {
    c10::NoGradGuard no_grad;
    auto off = peft.disable_adapters();
    ModelInputs in;
    in.input_ids = at::tensor(ids, at::kLong).unsqueeze(0).to(peft.model().device());
    in.cache = &cache;
    peft.model().forward(in);
  }
  // HF's prompt_embeddings_from_past_key_values: per position, layer-major (key, value)
  // rows of [heads, head_dim].
  std::vector<at::Tensor> rows;
  for (size_t l = 0; l < cache.keys.size(); ++l)
    for (const auto& t : {cache.keys[l], cache.values[l]})
      rows.push_back(t[0].narrow(1, 0, prefix->n).transpose(0, 1).to(at::kFloat));  // [n, heads, head_dim]
  const auto packed = at::stack(rows, 1).reshape({prefix->n, -1});
  c10::NoGradGuard no_grad;
  if (auto* cart = dynamic_cast<CartridgeEncoder*>(prefix)) {
    cart->load_prefix(packed);
  } else {
    if (!packed.sizes().equals(prefix->embedding.sizes()))
      throw std::invalid_argument("a KV-prefix of shape " + c10::str(packed.sizes()) + " for an adapter of " +
                                  c10::str(prefix->embedding.sizes()));
    prefix->embedding.copy_(packed);
  }
}

namespace {
[[maybe_unused]] const bool kCartridgeRegistered = register_method<CartridgeConfig>("CARTRIDGE");
// HF files the whole prefix as one "prompt_embeddings"; the adapter keeps frozen and
// trained rows apart.
[[maybe_unused]] const bool kCartridgeReader =
    register_file_tensors_reader("CARTRIDGE", [](const AdapterConfig& c, FileTensors& tensors) {
      const auto& cfg = static_cast<const CartridgeConfig&>(c);
      for (size_t i = 0; i < tensors.size(); ++i) {
        if (tensors[i].first != "prompt_embeddings") continue;
        const at::Tensor p = tensors[i].second;
        if (p.dim() != 2 || p.size(0) != cfg.num_virtual_tokens)
          throw std::runtime_error("'prompt_embeddings' has shape " + c10::str(p.sizes()) + ", not [" +
                                   std::to_string(cfg.num_virtual_tokens) + ", ...] (num_virtual_tokens)");
        const int64_t nf = cfg.num_frozen_tokens;
        tensors[i] = {"trainable_embedding", p.narrow(0, nf, p.size(0) - nf)};
        if (nf > 0) tensors.emplace_back("frozen_embedding", p.narrow(0, 0, nf));
        return;
      }
    });
}  // namespace

}  // namespace peft
