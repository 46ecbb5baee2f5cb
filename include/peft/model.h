// Pretrained transformer models loaded from a Hugging Face model folder.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "peft/module.h"

namespace peft {

// What a model reads: token ids (or embeddings), or images.
enum class InputKind { kTokens, kPixels };

// What a model's head computes; decides what `logits` means.
enum class TaskKind {
  kCausalLM,                // logits [batch, seq, vocab]
  kSequenceClassification,  // logits [batch, num_labels]
  kImageClassification,     // logits [batch, num_labels]
  kEncoder,                 // no head: last_hidden_state (and pooler_output)
  kTokenClassification,     // logits [batch, seq, num_labels]
};
const char* task_kind_name(TaskKind k);

// Keys and values of past positions, one entry per layer, [batch, kv_heads, len, head_dim].
struct KVCache {
  std::vector<at::Tensor> keys, values;
  int64_t length() const { return keys.empty() || !keys[0].defined() ? 0 : keys[0].size(2); }
};

struct ModelInputs {
  at::Tensor input_ids;       // [batch, seq] int64
  at::Tensor inputs_embeds;   // [batch, seq, hidden]: used instead of embedding input_ids
  at::Tensor attention_mask;  // [batch, past + seq], 1 = real token; undefined = all real
  at::Tensor position_ids;    // [batch, seq]; undefined = derived (decoders: past + arange)
  at::Tensor token_type_ids;  // BERT; undefined = zeros
  at::Tensor pixel_values;    // ViT: [batch, channels, height, width]
  KVCache* cache = nullptr;   // decoders: read and extended when given
  bool checkpoint_layers = false;  // gradient checkpointing of each transformer block
  // Causal LMs: return last_hidden_state only, without logits (a chunked loss applies
  // Model::output_layer() itself and never holds [tokens, vocab] at once).
  bool skip_logits = false;
  // Called with the hidden states entering each transformer block; returns the states the
  // block gets (ViT/CLIP: visual prompt tuning inserts and replaces prompt tokens here;
  // decoders: ShadowPEFT injects its shadow state).
  std::function<at::Tensor(size_t layer, const at::Tensor& hidden)> before_layer;
  // Decoders: called with each block's output; returns the states the next block (or the
  // final norm) gets (ShadowPEFT advances its shadow state from them).
  std::function<at::Tensor(size_t layer, const at::Tensor& hidden)> after_layer;

  int64_t batch_size() const { return input_ids.defined() ? input_ids.size(0) : inputs_embeds.size(0); }
  int64_t seq_len() const { return input_ids.defined() ? input_ids.size(1) : inputs_embeds.size(1); }
};

struct ModelOutputs {
  at::Tensor logits;
  at::Tensor last_hidden_state;
  at::Tensor pooler_output;
};

class Model;
class Embedding;
class AdaptableLayer;

// A tuner that acts on a model's inputs rather than on its layers: soft prompts prepended
// to the input embeddings, key/value prefixes in the cache, visual prompt tokens. The
// model calls it at the start of every forward while it is installed.
class InputAdapter : public Module {
 public:
  // Rewrites `in` for `model`; returns how many virtual positions it put in front of the
  // sequence, which forward() removes again from sequence-shaped outputs.
  virtual int64_t prepare(Model& model, ModelInputs& in) = 0;
  // Parameters an optimizer updates (default: every slot).
  virtual std::vector<at::Tensor*> trainable_slots();
  // The tensors an adapter file holds for it, under their file keys ("prompt_embeddings");
  // default: every slot under its name. Loading fills the slots by the same names.
  virtual std::vector<std::pair<std::string, at::Tensor>> saved_tensors();
  // An auxiliary training loss of the last forward given the batch's labels, already
  // weighted (ShadowPEFT's shadow-head LM loss); undefined where none.
  virtual at::Tensor aux_loss(const at::Tensor& labels) const { return {}; }
  // What it puts in front of every row whatever the input, so that its rows can share a
  // batch with other adapters' rows (PeftModel::with_virtual_tokens); undefined where that
  // depends on the batch or the adapter does more (task-routed prompts, SHADOW, X-LoRA).
  // Virtual token embeddings [n, dim] before the row's own (prompt tuning, P-tuning, CPT):
  virtual at::Tensor row_prompts() { return {}; }
  // Keys and values [layers, 2, kv_heads, n, head_dim] in the KV cache before the row's
  // positions (prefix tuning, CARTRIDGE):
  virtual at::Tensor row_prefix() { return {}; }
  bool training = false;
};

class Model : public Module {
 public:
  // Runs the model; with an input adapter installed its virtual positions are added to
  // the inputs and removed from the outputs again, so outputs line up with input_ids.
  ModelOutputs forward(const ModelInputs& in);
  virtual TaskKind task() const = 0;
  virtual InputKind input_kind() const { return InputKind::kTokens; }
  // transformers' class name: "LlamaForCausalLM", "BertModel", ...
  std::string type_name() const override = 0;
  const nlohmann::json& config() const { return config_; }
  // Layers whose attention reads keys/values from a KVCache: decoders' layers (which also
  // append to it), BERT's (key/value prefixes only); 0 for models without.
  virtual int64_t num_cache_layers() const { return 0; }
  // Distinct parameter elements, tied weights counted once (transformers' num_parameters()).
  int64_t num_parameters() const;

  // Parameters that share another's tensor when the config ties them (e.g. lm_head.weight
  // with tie_word_embeddings); checkpoints may omit them.
  virtual std::vector<std::string> tied_parameter_names() const { return {}; }
  // Points tied parameters at their source; called after loading.
  virtual void tie_weights() {}
  // transformers' base_model_prefix ("model", "transformer", "bert", "vit"): a checkpoint
  // saved from the headless model lacks it, one saved from a headed model has it.
  virtual std::string base_model_prefix() const { return ""; }
  // Parameters a checkpoint of the headless model does not have (a classifier head).
  virtual std::vector<std::string> head_parameter_names() const { return {}; }
  // transformers' checkpoint keys, where they differ from the module names (ViT's files
  // keep the v4 names): the name a key loads into, and the key a name is saved under.
  virtual std::string name_for_checkpoint_key(const std::string& key) const { return key; }
  virtual std::string checkpoint_key_for_name(const std::string& name) const { return name; }
  // Learned position embeddings bound the sequence (GPT-2, BERT); 0: no bound (RoPE).
  virtual int64_t max_positions() const { return 0; }
  // The token embedding (nullptr for image models).
  virtual Embedding* input_embeddings() { return nullptr; }
  // Causal LMs: the layer that maps last_hidden_state to logits (lm_head), so a caller
  // that sets ModelInputs::skip_logits can apply it in chunks; nullptr otherwise.
  virtual AdaptableLayer* output_layer() { return nullptr; }
  // A loss of the model's own that training adds to the task loss, from its last forward
  // and already weighted (an MoE model's router load-balancing loss times
  // router_aux_loss_coef, with output_router_logits); undefined when none. The trainer
  // gets it through PeftModel::aux_loss(), with the adapters' auxiliary losses.
  virtual at::Tensor aux_loss() const { return {}; }

  // Set by PeftModel to the active soft-prompt/prefix adapter; not owned.
  InputAdapter* input_adapter = nullptr;
  // The folder it was loaded from, absolute (transformers' name_or_path); adapters record
  // it as base_model_name_or_path.
  std::string name_or_path;
  // Head parameters load_model initialized because the checkpoint has none (a new
  // classifier); report_new_heads tells the user unless an adapter supplies them.
  std::vector<std::string> newly_initialized;

 protected:
  explicit Model(nlohmann::json config) : config_(std::move(config)) {}
  void check_inputs(const ModelInputs& in);
  virtual ModelOutputs run(const ModelInputs& in) = 0;
  nlohmann::json config_;
};

// QLoRA's base: Linear weights stored in 4 bits (bitsandbytes' NF4/FP4 blockwise format),
// quantized one tensor at a time as they stream from the file.
struct Load4bit {
  std::string quant_type = "nf4";  // "nf4" or "fp4"
  bool double_quant = false;       // quantize the absmax too (bnb_4bit_use_double_quant)
  int64_t blocksize = 64;          // 32..4096, a power of two
  // What the products compute in (bnb_4bit_compute_dtype); default: float32.
  std::optional<at::ScalarType> compute_dtype;
  // llm_int8_skip_modules: Linear layers kept in full precision, matched as transformers
  // matches them (a regex from the name's start up to a dot, or a suffix). When given, they
  // replace transformers' default (the output head and the last parameter's module).
  std::vector<std::string> skip_modules;
};

struct LoadOptions {
  std::optional<at::ScalarType> dtype;  // cast floating weights; default: float32
  // Quantize the Linear layers as transformers' bitsandbytes integration does (the output
  // head, tied weights and the last module stay full precision). A checkpoint saved
  // 4-bit (config.json's quantization_config) loads 4-bit without it.
  std::optional<Load4bit> load_in_4bit;
  // The compute dtype of 4-bit layers, over both load_in_4bit's and a 4-bit checkpoint's.
  std::optional<at::ScalarType> compute_dtype_4bit;
  std::optional<std::string> device;    // "cpu", "cuda", "cuda:1"; default: cpu
  // Build this class instead of config.json's (e.g. BertForSequenceClassification on a
  // BertModel checkpoint); a head the checkpoint lacks is then newly initialized, seeded,
  // with a warning, as transformers does.
  std::string architecture;
  int64_t num_labels = 0;  // with architecture: the classifier's size (0: config's)
  // Class names (id order); they set num_labels, id2label and label2id.
  std::vector<std::string> labels;
  uint64_t seed = 0;
};

// Builds the model that config.json's "architectures" (or "model_type") names and fills
// it from the folder's safetensors (single file or sharded via the index). Errors name
// the file and key: a missing tensor, a shape that does not match the config.
[[nodiscard]] std::shared_ptr<Model> load_model(const std::string& dir, const LoadOptions& opts = {});

// Replaces every 4-bit weight by its dequantized values in `dtype` (merging into a dense
// copy then adds no requantization error). Returns the number of layers converted.
int64_t dequantize_4bit_weights(Model& model, at::ScalarType dtype);

// Writes a model as an HF checkpoint folder (config.json + model.safetensors) that
// transformers loads; tied parameters are written once, as transformers does. A folder
// that already holds weights (model.safetensors, a sharded index, pytorch_model.bin) is
// refused unless `overwrite`; then a stale index and its shards are removed, so that
// the new weights are the ones that load.
void save_pretrained(Model& model, const std::string& dir, bool overwrite = false);
// The check save_pretrained makes first, for callers that want to fail before a long job.
void check_save_target(const std::string& dir, bool overwrite);

// Builds the model from a parsed config.json alone, parameters undefined.
std::shared_ptr<Model> build_model(const nlohmann::json& config, const std::string& where = "config.json");

}  // namespace peft
