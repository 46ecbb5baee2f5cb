// Methods whose adapter files hold some tensors in another form than the adapter's slots
// (VB-LoRA: top-k indices and weights for logits, one shared bank for every layer's).
// Saving goes through AdapterConfig::to_file_tensors; loading asks the reader a method
// registers here (from inside its folder) to turn the file's tensors back into slot keys.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "peft/tuner.h"

namespace peft {

using FileTensors = std::vector<std::pair<std::string, at::Tensor>>;
using FileTensorsReader = std::function<void(const AdapterConfig&, FileTensors&)>;

inline std::map<std::string, FileTensorsReader>& file_tensors_readers() {
  static std::map<std::string, FileTensorsReader> readers;
  return readers;
}

// Registers `read` for `peft_type`; returns true so it can initialize a static.
inline bool register_file_tensors_reader(const std::string& peft_type, FileTensorsReader read) {
  file_tensors_readers()[peft_type] = std::move(read);
  return true;
}

// The file's tensors under the adapter's slot keys: unchanged unless the method registered a reader.
inline void read_file_tensors(const AdapterConfig& config, FileTensors& tensors) {
  auto it = file_tensors_readers().find(config.peft_type());
  if (it != file_tensors_readers().end()) it->second(config, tensors);
}

}  // namespace peft
