#include "federated/protocol.h"

#include <ATen/ATen.h>

#include <cmath>
#include <cstring>
#include <set>
#include <stdexcept>

namespace peft::fed {

TensorBytes decode_tensors(const std::string& bytes, const std::string& where) {
  const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
  const StHeader h = parse_safetensors_header(p, bytes.size(), where);
  TensorBytes out;
  out.metadata = h.metadata;
  for (const auto& info : h.tensors) {
    at::Tensor t = at::empty(info.shape, at::TensorOptions().dtype(to_scalar_type(info.dtype, where)));
    if (t.nbytes() != info.end - info.begin)
      throw std::runtime_error(where + ": tensor '" + info.name + "' has " + std::to_string(info.end - info.begin) +
                               " bytes for shape " + c10::str(t.sizes()));
    if (t.nbytes()) std::memcpy(t.data_ptr(), p + h.data_start + info.begin, t.nbytes());
    out.tensors.emplace_back(info.name, t);
  }
  return out;
}

void check_update(const NamedTensors& update, const NamedTensors& global) {
  std::map<std::string, const at::Tensor*> want;
  for (const auto& [k, t] : global) want[k] = &t;
  std::set<std::string> seen;
  for (const auto& [k, t] : update) {
    auto it = want.find(k);
    if (it == want.end()) throw std::runtime_error("tensor '" + k + "' is not in the global adapter");
    if (!seen.insert(k).second) throw std::runtime_error("tensor '" + k + "' appears twice");
    if (t.scalar_type() != at::kFloat)
      throw std::runtime_error("tensor '" + k + "' is " + std::string(c10::toString(t.scalar_type())) +
                               ", expected Float (float32)");
    if (t.sizes() != it->second->sizes())
      throw std::runtime_error("tensor '" + k + "' has shape " + c10::str(t.sizes()) + ", the global adapter's is " +
                               c10::str(it->second->sizes()));
    if (!at::isfinite(t).all().item<bool>()) throw std::runtime_error("tensor '" + k + "' has NaN or infinite values");
  }
  for (const auto& [k, _] : want)
    if (!seen.count(k)) throw std::runtime_error("tensor '" + k + "' of the global adapter is missing");
}

UploadMeta read_upload_meta(const std::map<std::string, std::string>& metadata) {
  auto integer = [&](const char* key) -> int64_t {
    auto it = metadata.find(key);
    if (it == metadata.end()) throw std::runtime_error(std::string("metadata '") + key + "' is missing");
    size_t used = 0;
    int64_t v = 0;
    try {
      v = std::stoll(it->second, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != it->second.size())
      throw std::runtime_error(std::string("metadata '") + key + "' must be an integer, got '" +
                               it->second.substr(0, 40) + "'");
    return v;
  };
  for (const auto& [k, _] : metadata)
    if (k != "round" && k != "num_examples") throw std::runtime_error("metadata '" + k.substr(0, 60) + "' is not expected");
  UploadMeta m{integer("round"), integer("num_examples")};
  if (m.num_examples < 1) throw std::runtime_error("metadata 'num_examples' must be >= 1");
  return m;
}

double l2_norm(const NamedTensors& tensors) {
  double sq = 0;
  for (const auto& [_, t] : tensors) sq += t.to(at::kDouble).square().sum().item<double>();
  return std::sqrt(sq);
}

}  // namespace peft::fed
