// Pieces the two GGUF exporters share; not part of the public API.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "peft/gguf.h"
#include "peft/gguf_export.h"
#include "peft/safetensors_header.h"

namespace peft::gguf_export {

using Json = nlohmann::ordered_json;

[[noreturn]] void fail(const std::string& where, const std::string& what);

// A JSON file, parsed; GgufError naming the file if it is missing or malformed.
Json read_json(const std::string& path);

std::string shape_string(const std::vector<int64_t>& shape);  // "[4, 64]", for messages
int64_t numel(const std::vector<int64_t>& shape);

// A safetensors file mapped read-only with its header parsed (nothing else is read).
class StFile {
 public:
  explicit StFile(const std::string& path);
  ~StFile();
  StFile(const StFile&) = delete;
  StFile& operator=(const StFile&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<StTensorInfo>& tensors() const { return header_.tensors; }
  // A tensor's elements as float32, row-major: F32 as stored, F16 and BF16 widened exactly
  // (as torch's .to(float32) does). GgufError naming the file and tensor for other dtypes.
  std::vector<float> to_float(const StTensorInfo& t) const;

 private:
  std::string path_;
  const uint8_t* bytes_ = nullptr;
  size_t size_ = 0;
  StHeader header_;
};

// The hyperparameters of a llama-architecture model, from config.json with the defaults
// transformers' LlamaConfig / MistralConfig give absent keys (AutoConfig is what the
// converter reads).
struct LlamaHparams {
  std::string architecture;  // "LlamaForCausalLM" or "MistralForCausalLM"
  int64_t vocab_size = 0, hidden_size = 0, intermediate_size = 0, n_layer = 0;
  int64_t n_head = 0, n_head_kv = 0, head_dim = 0, context_length = 0;
  double rms_norm_eps = 0, rope_theta = 0;
  bool tied = false;          // tie_word_embeddings
  Json rope = Json::object();  // rope_parameters: rope_type, factor, ... (rope_theta too)
  Json config;                 // config.json as read, for the *_token_id keys
};

// GgufError naming `where` (the config file) for other architectures and missing keys.
LlamaHparams llama_hparams(const Json& config, const std::string& where);

// For a transformers name ("model.layers.3.self_attn.q_proj.weight"): its llama.cpp name,
// its shape [out, in] or [n] as the config implies, and the head count its rows are
// permuted by (q: n_head, k: n_head_kv, else 0). nullopt: a name llama.cpp does not know.
struct LlamaTensor {
  std::string gguf_name;
  std::vector<int64_t> shape;  // torch order
  int64_t permute_heads = 0;
};
std::optional<LlamaTensor> llama_tensor(const std::string& hf_name, const LlamaHparams& hp);

// The ggml type a --outtype gives a 2-D weight whose rows are `row_len` long, and
// whether that was the Q8_0 -> F16 fallback.
GgmlType matrix_type(GgufExportType t, int64_t row_len, bool* fell_back);
// general.file_type for --outtype (LlamaFileType: ALL_F32 0, MOSTLY_F16 1, Q8_0 7, BF16 32).
uint32_t file_type(GgufExportType t);

// Adds a tensor of float32 `data` (torch `shape`) encoded as `type`.
void add_float_tensor(GgufWriter& w, const std::string& name, const std::vector<int64_t>& shape,
                      GgmlType type, const std::vector<float>& data);

// general.name as the converter derives it from a folder name (gguf-py's
// Metadata.id_to_title, ASCII letters only) and general.size_label from a parameter count
// (gguf-py's size_label without experts).
std::string folder_title(const std::string& dir);
std::string size_label(uint64_t n_params);

// tokenizer.ggml.* for a byte-level BPE tokenizer.json in `dir`, as the converter's
// LlamaModel.set_vocab takes its gpt2 path (get_vocab_base + gguf.SpecialVocab).
void add_bpe_vocab(GgufMetadata& m, const std::string& dir, const LlamaHparams& hp, const std::string& pre);
// The gguf.SpecialVocab part of it: merges, special token ids, add_*_token flags, chat
// template. `tc` is tokenizer_config.json (null if absent); it is edited as gguf-py does.
void add_special_vocab(GgufMetadata& m, const std::string& dir, const Json& tok, Json tc, const Json& config);

}  // namespace peft::gguf_export
