// A base model with named adapters: add, load, save, switch, disable, merge, unload.
// The C++ counterpart of HF PEFT's PeftModel + its tuner models; files are HF PEFT's
// format. Any method (tuner.h) can be added; adapters of different methods can coexist.
#pragma once

#include <map>
#include <set>
#include <memory>
#include <string>
#include <vector>

#include "peft/composition.h"
#include "peft/lora.h"
#include "peft/tuner.h"
#include "peft/model.h"
#include "peft/safetensors.h"

namespace peft {

struct Seq2SeqInputs;
struct Seq2SeqOutputs;

class PeftModel {
 public:
  explicit PeftModel(std::shared_ptr<Model> base);

  // Attaches a new adapter as `cfg`'s method says and initializes it (seeded). The first
  // adapter added becomes active.
  void add_adapter(const std::string& name, const AdapterConfig& cfg, uint64_t seed = 0);
  // Reads adapter_config.json + adapter_model.safetensors written by HF PEFT or by us.
  void load_adapter(const std::string& dir, const std::string& name = "default");
  // Writes them; the base's config.json "_name_or_path" fills base_model_name_or_path.
  void save_adapter(const std::string& dir, const std::string& name = "default") const;
  // The tensors save_adapter writes, under HF PEFT's keys (base_model.model.<module>...).
  NamedTensors adapter_state_dict(const std::string& name) const;

  void set_adapter(const std::vector<std::string>& names);  // ends a composition
  // Run-time composition of loaded adapters (docs/COMPOSITION.md): every layer carrying
  // one of cfg.adapters combines them as cfg.kind says; they become the active adapters,
  // frozen unless cfg.train_adapters, and the composition's own tensors (fuse weights,
  // AdapterFusion's Q/K/V) train. Q/K are initialized from `seed`. Errors name the key.
  void set_composition(const CompositionConfig& cfg, uint64_t seed = 0);
  void clear_composition();  // back to the default fold of the active adapters
  const CompositionConfig* composition() const { return composition_ ? &composition_->config : nullptr; }
  // The composition's tensors, under composition_model.safetensors' keys.
  NamedTensors composition_state_dict() const;
  // composition_config.json + composition_model.safetensors (when it has tensors), and
  // with_adapters, each adapter it names in dir/<name>/ (save_adapter's files).
  void save_composition(const std::string& dir, bool with_adapters = true) const;
  // Reads them back: adapters not loaded yet come from dir/<name>/.
  void load_composition(const std::string& dir);
  const std::vector<std::string>& active_adapters() const { return active_; }
  std::vector<std::string> adapters() const;
  const AdapterConfig& config(const std::string& name) const;
  // The input adapter (soft prompt, prefix) of an adapter, or nullptr.
  InputAdapter* input_adapter(const std::string& name) const;
  void delete_adapter(const std::string& name);

  ModelOutputs forward(const ModelInputs& in) { return model_->forward(in); }
  // One forward of a batch whose rows use different adapters (HF PEFT's adapter_names):
  // row i uses row_adapters[i], "" or "__base__" for the base model alone, whatever is
  // active. Layer adapters (LoRA and its variants, (IA)3, LoHa/LoKr, ...), and soft prompts
  // and prefixes whose rows got their virtual tokens from with_virtual_tokens (a first
  // forward without them is refused); task-routed prompts, passes of their own (SHADOW,
  // X-LoRA), modules_to_save, trained base parameters and merged adapters are refused by
  // name.
  ModelOutputs forward_mixed(const ModelInputs& in, const std::vector<std::string>& row_adapters) {
    return forward_mixed(in, mixed_batch(row_adapters));
  }
  // The same with a batch made by mixed_batch(), which may serve several forwards while
  // its rows keep their adapters and no adapter is loaded, removed or changed.
  ModelOutputs forward_mixed(const ModelInputs& in, const MixedBatch& m);
  // An encoder-decoder's forward_seq2seq with the rows' adapters: layer adapters only (an
  // input adapter's rows are refused by mixed_batch on such a model).
  Seq2SeqOutputs forward_mixed(const Seq2SeqInputs& in, const MixedBatch& m);
  MixedBatch mixed_batch(const std::vector<std::string>& row_adapters) const;
  // A mixed batch's first forward with each row's virtual tokens, where generation with
  // its adapter alone has them: `in` holds input_ids, a left-padded attention_mask and an
  // empty cache. A soft prompt's n rows (InputAdapter::row_prompts) go between the row's
  // padding and its tokens, the sequence growing in front by the largest n; a prefix's
  // keys and values (row_prefix) fill the cache, right-aligned to the longest prefix.
  // Returns the inputs to run: inputs_embeds (with soft prompts), the mask over cache and
  // sequence, and position ids counted from it; `in` unchanged when no row has either.
  // Later (cached) steps only extend the mask.
  ModelInputs with_virtual_tokens(const ModelInputs& in, const MixedBatch& m);
  // An adapter's soft prompt [n, dim] and prefix [layers, 2, kv_heads, n, head_dim] for a
  // mixed batch's rows (undefined for none), and how many positions they take per row.
  at::Tensor row_prompts(const std::string& name) const;
  at::Tensor row_prefix(const std::string& name) const;
  int64_t virtual_tokens(const std::string& name) const;
  // HF PEFT's set_scale for every layer of an adapter: its contribution times
  // `multiplier`, relative to the loaded value (LoRA, LoHa, LoKr; others are refused).
  void set_adapter_scale(const std::string& name, double multiplier);
  // Why `name` cannot take part in a mixed batch, or "" when it can.
  std::string mixed_batch_refusal(const std::string& name) const;
  Model& model() { return *model_; }
  std::shared_ptr<Model> model_ptr() { return model_; }
  // Moves the base model and every adapter (layer adapters, input adapters, trainable
  // copies) to `device`; tensors shared before stay shared. For building on the host and
  // moving once, e.g. after the frozen base is stored in bf16. Not with a composition set.
  void to(at::Device device);

  // While alive, the model computes as the base model (adapters and modules_to_save off).
  class [[nodiscard]] Disabled {
   public:
    explicit Disabled(PeftModel* m);
    ~Disabled();
    Disabled(const Disabled&) = delete;
    Disabled& operator=(const Disabled&) = delete;

   private:
    PeftModel* m_;
  };
  [[nodiscard]] Disabled disable_adapters() { return Disabled(this); }

  // Folds the active adapters into the base weights; unmerge restores them. Methods that
  // cannot merge (soft prompts, prefixes, bottleneck adapters) throw, naming the method.
  void merge();
  void unmerge();
  // Merges the active adapters, removes every adapter, and returns the plain model.
  std::shared_ptr<Model> merge_and_unload();

  // (trainable, all) as HF PEFT counts them, and its one-line report.
  std::pair<int64_t, int64_t> trainable_parameters() const;
  std::string trainable_parameters_line() const;
  // Tensors that require grad (active adapters, active modules_to_save copies, biases).
  std::vector<at::Tensor> trainable_tensors() const;
  void train(bool on);
  // The auxiliary losses of the last forward (LayerAdapter::aux_loss, already weighted):
  // per active adapter the mean over its layers that report one, summed over adapters,
  // plus the active input adapter's and the model's own (Model::aux_loss). Undefined when
  // none does. `labels`: the batch's, for input adapters whose loss needs them (SHADOW).
  at::Tensor aux_loss(const at::Tensor& labels = {}) const;
  // The trainer's hooks (AdapterConfig::begin_training / after_optimizer_step), passed to
  // every active adapter's config with its layers.
  void begin_training(int64_t total_steps);
  void after_optimizer_step(int64_t global_step);

 private:
  // Trainable copies of one module's parameters (modules_to_save, LN tuning, BitFit).
  struct SavedModule {
    Module* module;
    std::vector<std::string> names;    // the copied parameters' local names
    std::vector<at::Tensor*> slots;    // where they live in the module
    std::vector<at::Tensor> original;
    std::map<std::string, std::vector<at::Tensor>> copies;  // adapter -> its trainable copy
    std::map<std::string, std::string> infix;               // adapter -> file key infix
  };
  void add_copy(const std::string& adapter, const CopySpec& spec);
  struct Attachment {
    std::string path;
    AdaptableLayer* layer;
  };
  void apply_state();  // active lists, modules_to_save swaps, requires_grad flags
  // An active adapter's soft prompt or modules_to_save copies are in place, which a mixed
  // batch (its rows follow their own adapters) must switch off.
  bool active_swaps_in() const;
  friend void report_new_heads(const Model& model, const PeftModel* peft);
  std::set<std::string> adapted_paths(const std::string& adapter) const;

  std::shared_ptr<Model> model_;
  std::map<std::string, std::unique_ptr<AdapterConfig>> configs_;
  std::map<std::string, std::shared_ptr<InputAdapter>> inputs_;  // adapter -> its input adapter
  std::map<std::string, std::vector<Attachment>> attachments_;  // adapter -> layers
  std::map<std::string, SavedModule> saved_modules_;              // path -> copies
  std::vector<std::string> active_;
  bool disabled_ = false;
  std::unique_ptr<ActiveComposition> composition_;  // set_composition
};

// A note on stderr for each head parameter load_model initialized, unless `peft` (may be
// null) supplies it (an adapter's modules_to_save copy, or a parameter it trains).
void report_new_heads(const Model& model, const PeftModel* peft);

}  // namespace peft
