// Export to llama.cpp: a Hugging Face PEFT LoRA adapter as the adapter GGUF that
// llama.cpp loads with `--lora`, and a llama-architecture Hugging Face model folder as a
// model GGUF, each written as llama.cpp's own converters write it for the llama
// architecture (convert_lora_to_gguf.py, convert_hf_to_gguf.py): same metadata keys and
// types, tensor names, q/k row permutation, tensor types and order. docs/GGUF_EXPORT.md
// lists the rules, where they come from, and the few deliberate differences.
//
// Torch-free, like gguf.h: safetensors are read through mmap with the header parser.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "peft/gguf.h"

namespace peft {

// The converters' --outtype choices. Matrices get this type; 1-D tensors and norms stay
// F32; Q8_0 falls back to F16 for a matrix whose rows are not a multiple of 32 long (as
// gguf-py's quantize does when it refuses the shape).
enum class GgufExportType { F32, F16, BF16, Q8_0 };
const char* gguf_export_type_name(GgufExportType t);  // "f32", "f16", "bf16", "q8_0"
bool gguf_export_type_from_name(const std::string& name, GgufExportType* out);

// What an export wrote, for the caller to report.
struct GgufExportReport {
  size_t n_tensors = 0;
  std::vector<std::string> notes;  // things a user should know (alpha rescaled, F16 fallbacks)
};

// ---------------------------------------------------------------- LoRA adapters

struct LoraExportOptions {
  // The base model: a Hugging Face folder (its config.json; weights are not read) or a
  // llama GGUF. Empty: the folder adapter_config.json names in base_model_name_or_path,
  // which must then exist locally (no downloads).
  std::string base;
  GgufExportType type = GgufExportType::F32;  // convert_lora_to_gguf.py's default
  std::string name;                           // general.name; empty: from the folder name
};

// `adapter_dir` holds HF PEFT's adapter_config.json and adapter_model.safetensors. The
// base must be LlamaForCausalLM or MistralForCausalLM (llama.cpp's llama architecture).
// lora_A is stored as is ([r, in]); lora_B as is ([out, r]) except that q_proj's and
// k_proj's rows are permuted as the base's were; embedding LoRA stores lora_a transposed.
// llama.cpp scales each pair by adapter.lora.alpha / r (r from lora_b), so:
//   - rank_pattern works as is;
//   - rsLoRA (alpha / sqrt(r)) is written as alpha * sqrt(r), which needs one r for all;
//   - alpha_pattern entries that differ from lora_alpha cannot be expressed.
// Refused with a GgufError naming the file and the feature or tensor: DoRA, lora_bias,
// trained biases, modules_to_save and other non-LoRA tensors, alpha_pattern, rsLoRA with
// mixed ranks, lora_alpha 0, LoRA on lm_head or embeddings when the base ties them, and
// bases of other architectures.
GgufExportReport export_lora_gguf(const std::string& adapter_dir, const std::string& out_path,
                                  const LoraExportOptions& opt = {});

// ---------------------------------------------------------------- models

struct ModelExportOptions {
  GgufExportType type = GgufExportType::F16;  // convert_hf_to_gguf.py's default
  std::string name;                           // general.name; empty: from the folder name
  // tokenizer.ggml.pre. Empty: recognized from tokenizer.json's pre-tokenizer (gpt-2,
  // smollm, llama-bpe, qwen2); GgufError for any other.
  std::string tokenizer_pre;
};

// `model_dir` holds config.json (LlamaForCausalLM or MistralForCausalLM), model.safetensors
// or shards with model.safetensors.index.json (F32, F16 or BF16), and a byte-level BPE
// tokenizer.json with tokenizer_config.json (and chat_template.jinja, if any).
GgufExportReport export_model_gguf(const std::string& model_dir, const std::string& out_path,
                                   const ModelExportOptions& opt = {});

}  // namespace peft
