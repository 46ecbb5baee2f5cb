#include "tuners/prompt_learning/prompt_learning.h"

#include <ATen/ATen.h>

#include "peft/layers.h"

namespace peft {

int64_t int_or_zero(const ConfigFields& f, const char* key) { return f.is_null(key) ? 0 : f.get<int64_t>(key); }

void read_sizes(const ConfigFields& f, PromptLearningConfig& c) {
  c.num_virtual_tokens = int_or_zero(f, "num_virtual_tokens");
  if (c.num_virtual_tokens <= 0) f.fail("'num_virtual_tokens' must be a positive integer");
  c.token_dim = int_or_zero(f, "token_dim");
  c.num_attention_heads = int_or_zero(f, "num_attention_heads");
  c.num_layers = int_or_zero(f, "num_layers");
  c.num_transformer_submodules = f.is_null("num_transformer_submodules") ? 1 : f.get<int64_t>("num_transformer_submodules");
  if (c.num_transformer_submodules != 1 && c.num_transformer_submodules != 2)
    f.fail("num_transformer_submodules must be 1 or 2 (encoder and decoder), got " +
           std::to_string(c.num_transformer_submodules));
}

ojson size_fields(const PromptLearningConfig& c) {
  auto v = [](int64_t x) { return x > 0 ? ojson(x) : ojson(); };
  ojson j;
  j["num_virtual_tokens"] = c.num_virtual_tokens;
  j["token_dim"] = v(c.token_dim);
  j["num_attention_heads"] = v(c.num_attention_heads);
  j["num_layers"] = v(c.num_layers);
  j["num_transformer_submodules"] = c.num_transformer_submodules;
  return j;
}

at::Device device_of(Model& model) { return model.device(); }

// The first of `keys` config.json has.
int64_t model_int(const Model& model, std::initializer_list<const char*> keys) {
  for (const char* k : keys)
    if (model.config().contains(k) && model.config()[k].is_number_integer()) return model.config()[k].get<int64_t>();
  return 0;
}

void check_size(const std::string& method, const char* field, int64_t config, int64_t model_value,
                const std::string& model) {
  if (config != model_value)
    throw std::invalid_argument(method + ": " + field + " is " + std::to_string(config) + " but " + model + " needs " +
                                std::to_string(model_value) + " (is this adapter for another base model?)");
}

void check_token_dim(const PromptLearningConfig& c, Model& model) {
  Embedding* emb = model.input_embeddings();
  if (!emb) throw std::invalid_argument(c.peft_type() + ": " + model.type_name() + " has no token embedding");
  check_size(c.peft_type(), "token_dim", c.token_dim, emb->embedding_dim, model.type_name());
}

bool unset_in_source(const PromptLearningConfig& c, const char* key) {
  return c.source.is_object() && c.source.value(key, ojson()).is_null();
}

void check_submodules(const PromptLearningConfig& c, Model& model) {
  if (c.num_transformer_submodules == 2 && !as_seq2seq(model))
    throw std::invalid_argument(c.peft_type() + ": num_transformer_submodules 2 is for encoder-decoder models; " +
                                model.type_name() + " has one transformer");
}

at::Tensor prepend_ones(const at::Tensor& mask, int64_t n) {
  return at::cat({at::ones({mask.size(0), n}, mask.options()), mask}, 1);
}

void PromptLearningConfig::resolve(const Model& model) {
  // transformers' attribute_map aliases, as HF PEFT reads them (BART's num_hidden_layers and
  // num_attention_heads are its encoder's).
  if (num_layers == 0) num_layers = model_int(model, {"num_hidden_layers", "num_layers", "n_layer", "encoder_layers"});
  if (token_dim == 0) token_dim = model_int(model, {"hidden_size", "n_embd", "d_model"});
  if (num_attention_heads == 0)
    num_attention_heads = model_int(model, {"num_attention_heads", "n_head", "num_heads", "encoder_attention_heads"});
  // HF PEFT: unset, it is 2 for SEQ_2_SEQ_LM (the encoder and the decoder), else 1. A
  // config made in code counts as unset while it holds the default 1.
  if (source.is_object() ? unset_in_source(*this, "num_transformer_submodules") : num_transformer_submodules == 1)
    num_transformer_submodules =
        task_type == "SEQ_2_SEQ_LM" || (task_type.empty() && model.config().value("is_encoder_decoder", false)) ? 2 : 1;
  if (token_dim == 0 || num_attention_heads == 0 || num_layers == 0)
    throw std::invalid_argument(peft_type() + ": cannot read the model's sizes from its config.json; set token_dim, "
                                "num_attention_heads and num_layers");
}

SoftPrompt::SoftPrompt(int64_t n_, int64_t dim_, const std::string& slot, int64_t rows_)
    : n(n_), dim(dim_), rows(rows_ > 0 ? rows_ : n_) {
  embedding = at::zeros({rows, dim}, at::kFloat);
  register_parameter(slot, &embedding, {rows, dim});
}

int64_t SoftPrompt::prepare(Model& model, ModelInputs& in) {
  const int64_t b = in.batch_size();
  if (in.attention_mask.defined()) in.attention_mask = prepend_ones(in.attention_mask, n);
  if (in.cache && in.cache->length() > 0) {  // a later generation step: prompts are cached
    if (in.position_ids.defined()) in.position_ids = in.position_ids + n;
    return 0;
  }
  Embedding* emb = model.input_embeddings();
  if (!emb) throw std::invalid_argument(model.type_name() + " has no token embedding to prepend soft prompts to");
  auto embeds = in.inputs_embeds.defined() ? in.inputs_embeds : emb->forward(in.input_ids);
  in.inputs_embeds = at::cat({batch_prompts(b).to(embeds.scalar_type()), embeds}, 1);
  in.input_ids = at::Tensor();
  if (in.token_type_ids.defined())
    in.token_type_ids = at::cat({at::zeros({b, n}, in.token_type_ids.options()), in.token_type_ids}, 1);
  if (in.position_ids.defined()) {
    auto pre = at::arange(n, in.position_ids.options()).unsqueeze(0).expand({b, n});
    in.position_ids = at::cat({pre, in.position_ids + n}, 1);
  }
  return n;
}

// HF PEFT's PeftModelForSeq2SeqLM.forward: the first n prompts before the encoder's input
// embeddings, n ones before its attention mask; the decoder's inputs unchanged.
void SoftPrompt::prepare_seq2seq(Model& model, Seq2SeqInputs& in) {
  if (in.attention_mask.defined()) in.attention_mask = prepend_ones(in.attention_mask, n);
  if (in.encoder_hidden_states.defined()) return;  // the encoder ran (a later generation step): prompts are in it
  Embedding* emb = model.input_embeddings();
  if (!emb) throw std::invalid_argument(model.type_name() + " has no token embedding to prepend soft prompts to");
  auto embeds = in.inputs_embeds.defined() ? in.inputs_embeds : emb->forward(in.input_ids);
  const int64_t b = embeds.size(0);
  in.inputs_embeds = at::cat({batch_prompts(b).to(embeds.scalar_type()), embeds}, 1);
  in.input_ids = at::Tensor();
}

std::vector<std::pair<std::string, at::Tensor>> SoftPrompt::saved_tensors() {
  return {{"prompt_embeddings", prompts().detach()}};
}

}  // namespace peft
