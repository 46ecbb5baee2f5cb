// safetensors files as LibTorch tensors: zero-copy reads through mmap, atomic writes.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "peft/safetensors_header.h"

namespace peft {

// A read-only mapping of one safetensors file. Tensors returned by get() alias the
// mapping (no copy) and keep it alive, so the file object may be dropped early.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);

  const std::string& path() const { return path_; }
  const StHeader& header() const { return header_; }
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }
  std::vector<std::string> names() const;
  bool contains(const std::string& name) const;
  const StTensorInfo& info(const std::string& name) const;
  // A view of the stored bytes (copy-on-write: writes never reach the file).
  at::Tensor get(const std::string& name) const;

 private:
  struct Mapping;
  std::string path_;
  std::shared_ptr<Mapping> map_;
  StHeader header_;
  std::map<std::string, size_t> index_;
};

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

// Writes tensors (any device, any layout; copied to contiguous CPU) to `path` by writing
// `path.tmp` and renaming it, so a crash never leaves a half-written file behind.
void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata = {});
// The same bytes as save_safetensors writes, in memory (for sending over a network).
std::string serialize_safetensors(const NamedTensors& tensors,
                                  const std::map<std::string, std::string>& metadata = {});

at::ScalarType to_scalar_type(StDType t, const std::string& where);
StDType to_st_dtype(at::ScalarType t);

}  // namespace peft
