// Where a model's config and weights come from: a Hugging Face folder (config.json and
// one or many safetensors files) or a GGUF file (llama.cpp's format, dequantized and
// renamed as transformers loads it). load_model and the tokenizer use this to accept
// either.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace peft {

// What a model path names: a GGUF file given directly, a folder holding config.json, or
// a folder holding exactly one .gguf file (and no config.json).
struct ModelPath {
  std::string folder;  // the folder (of the GGUF file, when there is one)
  std::string gguf;    // empty for a Hugging Face folder
};
ModelPath resolve_model_path(const std::string& path);

class CheckpointReader {
 public:
  virtual ~CheckpointReader() = default;
  virtual const nlohmann::json& config() const = 0;
  // The keys it holds, transformers' names (a GGUF file's are renamed).
  virtual std::vector<std::string> keys() const = 0;
  virtual std::vector<int64_t> shape(const std::string& key) const = 0;
  // The tensor, read (or dequantized) only now; the caller checks shape() first.
  virtual at::Tensor get(const std::string& key) const = 0;
  // The file or index that holds `key`, and what to call the whole, in messages.
  virtual std::string file_of(const std::string& key) const = 0;
  virtual std::string describe() const = 0;
};

std::unique_ptr<CheckpointReader> open_checkpoint(const ModelPath& path);

}  // namespace peft
