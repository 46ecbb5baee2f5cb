// What goes over the wire in federated training: adapter tensors as safetensors bytes,
// and the checks an upload must pass before the coordinator uses it.
#pragma once

#include <map>
#include <string>

#include "peft/safetensors.h"

namespace peft::fed {

// Request headers and paths shared by the coordinator and its clients.
inline constexpr const char* kRoundHeader = "X-Peft-Round";
inline constexpr const char* kStatusPath = "/v1/status";
inline constexpr const char* kGlobalPath = "/v1/global";
inline constexpr const char* kConfigPath = "/v1/adapter_config";
inline constexpr const char* kUpdatePath = "/v1/update";

struct TensorBytes {
  NamedTensors tensors;
  std::map<std::string, std::string> metadata;
};

// Tensors travel as safetensors bytes: serialize_safetensors (peft/safetensors.h) writes
// them. This parses and validates safetensors bytes; the tensors own copies. Throws one line naming `where`.
TensorBytes decode_tensors(const std::string& bytes, const std::string& where);

// An update must carry exactly the global adapter's tensors, each float32 of the same
// shape, all finite. Throws one line naming the first offending key.
void check_update(const NamedTensors& update, const NamedTensors& global);

// An upload's metadata: {"round": N, "num_examples": K}, both integers (K >= 1).
struct UploadMeta {
  int64_t round = -1, num_examples = 0;
};
UploadMeta read_upload_meta(const std::map<std::string, std::string>& metadata);

// Global L2 norm over all tensors.
double l2_norm(const NamedTensors& tensors);

}  // namespace peft::fed
