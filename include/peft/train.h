// Fine-tuning: `peft train` as a library call. One JSON config (docs/TRAINING.md lists
// every field and its default), HF PEFT adapters out, resumable checkpoints.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace peft {

struct TrainConfig {
  // What to train.
  std::string model;                 // HF model folder (config.json + safetensors)
  std::string tokenizer;             // tokenizer folder; default: the model folder
  std::string architecture;          // e.g. BertForSequenceClassification on a BertModel checkpoint
  int64_t num_labels = 0;            // with architecture: classes of the new head
  std::vector<std::string> labels;   // class names in id order (string labels in the data)
  nlohmann::ordered_json method;     // adapter_config.json fields (LoRA), e.g. {"r": 8, "target_modules": [...]}
  std::string init_adapter;          // start from this adapter folder instead of a fresh init
  // CARTRIDGE / PREFIX_TUNING (no projection): the new prefix starts as the base model's KV
  // cache of this text (HF's initialize_kv_prefix_from_text; a system message through the
  // chat template when the tokenizer has one).
  std::string init_kv_prefix_text;
  // Instead of a new adapter, train a composition of loaded, frozen adapters
  // (docs/COMPOSITION.md): {"composition": "adapter_fusion", "adapters": {"name": "dir", ...}, ...}.
  nlohmann::ordered_json composition;
  std::string output_dir = "peft-output";
  // Data.
  std::string train_file;            // JSONL; for images a .npy [N, C, H, W]
  std::string label_file;            // images: .npy [N] of class indices
  std::string eval_file;             // JSONL (or .npy); or carve eval_split off the training data
  std::string eval_label_file;       // images: labels of eval_file
  double eval_split = 0.0;
  std::string format = "auto";       // auto | input_ids | text | prompt_completion | messages | text_label
  int64_t max_length = 512;          // longer examples are truncated
  bool packing = false;              // causal LM: whole examples packed into rows of max_length, kept apart
  bool padding_free = false;         // causal LM: each micro-batch one row, no padding (HF DataCollatorWithFlattening)
  bool completion_only_loss = true;  // prompt/completion and messages: loss on the completion only
  std::string chat_loss_turns = "all";  // messages: loss on every assistant turn, or "last"
  bool label_all_tokens = false;  // token_tags: label every sub-token of a word, not only its first
  std::string on_bad_line = "stop";  // stop | skip (a malformed JSONL line)
  bool shuffle = true;
  // Optimization (HF Trainer's names and defaults where it has them).
  double learning_rate = 2e-4;
  double weight_decay = 0.0;
  double adam_beta1 = 0.9, adam_beta2 = 0.999, adam_epsilon = 1e-8;
  std::string lr_scheduler_type = "linear";  // constant | constant_with_warmup | linear | cosine
  // adamw_torch (one parameter at a time, HF Trainer's arithmetic on the CPU) |
  // adamw_torch_fused (torch's fused kernel: one launch per group on a GPU) | auto (fused on
  // a GPU, adamw_torch on the CPU)
  std::string optim = "auto";
  int64_t warmup_steps = 0;
  double warmup_ratio = 0.0;
  int64_t per_device_train_batch_size = 8;
  int64_t per_device_eval_batch_size = 8;
  int64_t gradient_accumulation_steps = 1;
  double max_grad_norm = 1.0;        // 0: no clipping
  int64_t max_steps = -1;            // > 0 overrides num_train_epochs
  double num_train_epochs = 1.0;
  std::string precision = "fp32";    // fp32 | bf16 (autocast of the forward on CPU/CUDA)
  bool gradient_checkpointing = false;
  // With gradient_checkpointing: recompute blocks 0, k, 2k, ... only; the others keep their
  // activations (memory between none and all, for less recompute time).
  int64_t gradient_checkpointing_every = 1;
  // With gradient_checkpointing on a GPU: the recomputed blocks' inputs wait in host memory.
  bool gradient_checkpointing_offload = false;
  // Data-parallel runs: gradients are summed over the ranks in buckets of at most this many
  // MiB (the first at most 1), each started as soon as the backward has produced it (HF's
  // name; DDP's default).
  double ddp_bucket_cap_mb = 25.0;
  std::string device = "cpu";
  // QLoRA: the base's Linear weights stored 4-bit (bitsandbytes' format) as they load.
  bool load_in_4bit = false;
  std::string quant_type = "nf4";    // nf4 | fp4
  bool double_quant = false;
  int64_t blocksize = 64;            // 4-bit block: a power of two in 32..4096
  std::string compute_dtype;         // float32 | bfloat16; empty: the checkpoint's, else float32
  // Linear layers kept full precision (BitsAndBytesConfig's llm_int8_skip_modules), e.g. a
  // classifier head trained as modules_to_save; empty: transformers' default.
  std::vector<std::string> llm_int8_skip_modules;
  // Bookkeeping.
  int64_t logging_steps = 1;
  int64_t eval_steps = 0;            // 0: evaluate at the end only
  int64_t save_steps = 0;            // 0: save at the end only
  int64_t save_total_limit = 2;      // checkpoints kept
  int64_t early_stopping_patience = 0;  // evaluations without improvement before stopping; 0: off
  uint64_t seed = 42;
  bool progress = true;

  // Parses a config; unknown keys are an error naming them (a typo must not be ignored).
  static TrainConfig from_json(const nlohmann::json& j, const std::string& where);
  nlohmann::json to_json() const;
  // Throws naming the first missing or out-of-range setting (from_json and train call it).
  void validate(const std::string& where = "training config") const;
  // A config JSON with "key=value" overrides applied (value parsed as JSON, else taken
  // as a string; "method.r=16" sets a field of method), before from_json validates it.
  static nlohmann::json with_overrides(nlohmann::json j, const std::vector<std::string>& kv);
};

struct StepLog {
  int64_t step;
  double loss, learning_rate, grad_norm, tokens_per_second;
  double aux_loss = 0;  // adapters' auxiliary losses (MoLE load balancing), not in `loss`
};

struct TrainResult {
  std::vector<StepLog> steps;        // every optimizer step of this run (resumed runs: the rest)
  std::vector<nlohmann::json> evals; // {step, eval_loss, eval_perplexity | eval_accuracy}
  std::string adapter_dir;           // the final adapter (HF PEFT format)
  int64_t train_examples = 0;        // training examples (after eval_split): FedAvg weighs clients by it
};

// Trains; with resume, continues from the newest intact checkpoint in output_dir so that
// the remaining steps are exactly those of an uninterrupted run. output_dir is locked
// while training. An output_dir that holds another run's files (or, without resume, any
// earlier run's) is refused unless overwrite, which deletes them first.
TrainResult train(const TrainConfig& cfg, bool resume = false, bool overwrite = false);

// Loss (and perplexity for causal LMs, accuracy for classifiers) of model + adapters on a
// JSONL file, formatted as training formats it.
nlohmann::json evaluate(const TrainConfig& cfg, const std::vector<std::string>& adapters);

}  // namespace peft
