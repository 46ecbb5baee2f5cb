// The safetensors header: parsed and validated without touching any tensor data.
//
// File layout: 8-byte little-endian header length N, N bytes of JSON, then the data
// buffer. The JSON maps tensor names to {dtype, shape, data_offsets: [begin, end]}
// (offsets relative to the start of the data buffer) plus an optional "__metadata__"
// map of string to string. This part has no LibTorch dependency so the fuzzer can
// build it alone.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace peft {

// Every error reading or writing safetensors; the message names the file and tensor.
class SafetensorsError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class StDType { BOOL, U8, I8, I16, U16, I32, U32, I64, U64, F16, BF16, F32, F64 };

const char* dtype_name(StDType t);
size_t dtype_size(StDType t);
bool dtype_from_name(const std::string& name, StDType* out);

struct StTensorInfo {
  std::string name;
  StDType dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets into the data buffer
  uint64_t end = 0;
};

struct StHeader {
  std::vector<StTensorInfo> tensors;  // sorted by begin offset
  std::map<std::string, std::string> metadata;
  uint64_t data_start = 0;            // file offset of the data buffer (8 + N)
};

// Parses and validates a whole file image of `size` bytes (only the header is read;
// offsets are checked against `size`). `where` names the file in error messages.
StHeader parse_safetensors_header(const uint8_t* file, size_t size, const std::string& where);

// The header JSON for these tensors, padded with spaces to a multiple of 8 bytes.
std::string serialize_safetensors_header(const std::vector<StTensorInfo>& tensors,
                                         const std::map<std::string, std::string>& metadata);

}  // namespace peft
