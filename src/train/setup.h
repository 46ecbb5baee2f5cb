// What training and evaluation start from: the model with its adapters, the tokenizer,
// and the data read the way the model needs it.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "peft/peft_model.h"
#include "peft/tokenizer.h"
#include "peft/train.h"
#include "train/data.h"

namespace peft {

struct TrainSetup {
  std::shared_ptr<Model> model;
  std::unique_ptr<PeftModel> peft;
  std::optional<Tokenizer> tokenizer;
  // A fresh LoRA whose init rewrote the base (PiSSA, OLoRA, CorDA): its tensors as the init
  // left them, so the final save can write a plain LoRA of the original base.
  NamedTensors initial_adapter;
  bool causal = true;  // causal LM; else a sequence or image classifier
  int64_t pad_id = 0;
};

// Loads cfg.model and `adapters` (the first named "default"); with `fresh_adapter` and no
// adapters, adds cfg.method as a new trainable adapter. With precision bf16 the frozen
// matmul weights are then stored in bf16 (train/precision.h).
TrainSetup load_setup(const TrainConfig& cfg, const std::vector<std::string>& adapters, bool fresh_adapter);

// What training writes to a folder: the adapter, or the composition (with its frozen
// adapters unless `checkpoint`: a checkpoint's files are flat, and they come from the config).
// With `initial_adapter` (TrainSetup's; final saves only) the adapter is written as a plain
// LoRA of the original base (src/tuners/lora/init_conversion.h).
void save_trained(const PeftModel& peft, const std::string& dir, bool checkpoint = false,
                  const NamedTensors* initial_adapter = nullptr);

DataOptions data_options(const TrainConfig& cfg, const TrainSetup& s);

// JSONL; for images a .npy with its labels .npy, a folder of class folders, or JSONL of
// {"image", "label"} (train/image_data.h).
std::vector<Example> read_data(const std::string& file, const std::string& labels, const DataOptions& o);

}  // namespace peft
