#include "peft/safetensors_header.h"

#include <algorithm>
#include <set>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>

namespace peft {
namespace {

struct DTypeEntry {
  StDType type;
  const char* name;
  size_t size;
};
constexpr DTypeEntry kDTypes[] = {
    {StDType::BOOL, "BOOL", 1}, {StDType::U8, "U8", 1},     {StDType::I8, "I8", 1},
    {StDType::I16, "I16", 2},   {StDType::U16, "U16", 2},   {StDType::I32, "I32", 4},
    {StDType::U32, "U32", 4},   {StDType::I64, "I64", 8},   {StDType::U64, "U64", 8},
    {StDType::F16, "F16", 2},   {StDType::BF16, "BF16", 2}, {StDType::F32, "F32", 4},
    {StDType::F64, "F64", 8},
};

// Same bound as the reference implementation: a larger header is treated as corrupt.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

[[noreturn]] void fail(const std::string& where, const std::string& what) {
  throw SafetensorsError(where + ": " + what);
}

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

StTensorInfo parse_entry(const std::string& name, const nlohmann::json& e,
                         const std::string& where) {
  const std::string ctx = "tensor '" + name + "'";
  if (!e.is_object()) fail(where, ctx + ": entry is not an object");
  for (const auto& [k, _] : e.items())
    if (k != "dtype" && k != "shape" && k != "data_offsets")
      fail(where, ctx + ": unknown field '" + k + "'");
  StTensorInfo t;
  t.name = name;
  auto dt = e.find("dtype");
  if (dt == e.end() || !dt->is_string()) fail(where, ctx + ": missing or non-string 'dtype'");
  if (!dtype_from_name(dt->get<std::string>(), &t.dtype))
    fail(where, ctx + ": unknown dtype '" + dt->get<std::string>() + "'");
  auto sh = e.find("shape");
  if (sh == e.end() || !sh->is_array()) fail(where, ctx + ": missing or non-array 'shape'");
  uint64_t numel = 1;
  for (const auto& d : *sh) {
    if (!d.is_number_unsigned()) fail(where, ctx + ": shape entries must be non-negative integers");
    uint64_t v = d.get<uint64_t>();
    if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
        (v != 0 && numel > std::numeric_limits<uint64_t>::max() / v))
      fail(where, ctx + ": shape overflows");
    numel *= v;
    t.shape.push_back(static_cast<int64_t>(v));
  }
  auto off = e.find("data_offsets");
  if (off == e.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
      !(*off)[1].is_number_unsigned())
    fail(where, ctx + ": 'data_offsets' must be two non-negative integers");
  t.begin = (*off)[0].get<uint64_t>();
  t.end = (*off)[1].get<uint64_t>();
  if (t.end < t.begin) fail(where, ctx + ": data_offsets end before they begin");
  const size_t es = dtype_size(t.dtype);
  if (numel > std::numeric_limits<uint64_t>::max() / es || numel * es != t.end - t.begin)
    fail(where, ctx + ": shape " + sh->dump() + " of " + dtype_name(t.dtype) + " needs " +
                    std::to_string(numel * es) + " bytes but data_offsets span " +
                    std::to_string(t.end - t.begin));
  return t;
}

}  // namespace

const char* dtype_name(StDType t) {
  for (const auto& e : kDTypes)
    if (e.type == t) return e.name;
  return "?";
}

size_t dtype_size(StDType t) {
  for (const auto& e : kDTypes)
    if (e.type == t) return e.size;
  return 0;
}

bool dtype_from_name(const std::string& name, StDType* out) {
  for (const auto& e : kDTypes)
    if (name == e.name) {
      *out = e.type;
      return true;
    }
  return false;
}

StHeader parse_safetensors_header(const uint8_t* file, size_t size, const std::string& where) {
  if (size < 8) fail(where, "file is " + std::to_string(size) + " bytes, shorter than the 8-byte header length");
  const uint64_t n = read_u64_le(file);
  if (n > kMaxHeaderBytes) fail(where, "header length " + std::to_string(n) + " is implausibly large");
  if (n > size - 8)
    fail(where, "header length " + std::to_string(n) + " runs past the end of the file (" +
                    std::to_string(size) + " bytes); the file is truncated or not safetensors");
  const char* begin = reinterpret_cast<const char*>(file + 8);
  nlohmann::json j;
  // Duplicate keys would silently keep the last one (the reference rejects them), and
  // nesting is bounded so later recursion over the value stays shallow.
  std::vector<std::set<std::string>> keys;
  auto check = [&](int depth, nlohmann::json::parse_event_t ev, nlohmann::json& v) {
    using E = nlohmann::json::parse_event_t;
    if (depth > 64) fail(where, "header JSON is nested too deeply");
    if (ev == E::object_start) keys.emplace_back();
    else if (ev == E::object_end && !keys.empty()) keys.pop_back();
    else if (ev == E::key && !keys.empty() && !keys.back().insert(v.get<std::string>()).second)
      fail(where, "header names '" + v.get<std::string>() + "' twice");
    return true;
  };
  try {
    j = nlohmann::json::parse(begin, begin + n, check);
  } catch (const nlohmann::json::exception& e) {
    fail(where, std::string("header is not valid JSON: ") + e.what());
  }
  if (!j.is_object()) fail(where, "header JSON is not an object");

  StHeader h;
  h.data_start = 8 + n;
  const uint64_t data_size = size - h.data_start;
  for (const auto& [name, entry] : j.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) fail(where, "__metadata__ is not an object");
      for (const auto& [k, v] : entry.items()) {
        if (!v.is_string()) fail(where, "__metadata__ value of '" + k + "' is not a string");
        h.metadata[k] = v.get<std::string>();
      }
      continue;
    }
    h.tensors.push_back(parse_entry(name, entry, where));
  }
  std::sort(h.tensors.begin(), h.tensors.end(), [](const StTensorInfo& a, const StTensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t prev_end = 0;
  const StTensorInfo* prev = nullptr;
  for (const auto& t : h.tensors) {
    if (t.end > data_size)
      fail(where, "tensor '" + t.name + "' data_offsets [" + std::to_string(t.begin) + ", " +
                      std::to_string(t.end) + ") lie outside the " + std::to_string(data_size) +
                      "-byte data buffer; the file is truncated or corrupt");
    if (prev && t.begin < prev_end)
      fail(where, "tensors '" + prev->name + "' and '" + t.name + "' overlap in the data buffer");
    prev_end = t.end;
    prev = &t;
  }
  return h;
}

std::string serialize_safetensors_header(const std::vector<StTensorInfo>& tensors,
                                         const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  if (!metadata.empty()) j["__metadata__"] = metadata;
  for (const auto& t : tensors)
    j[t.name] = {{"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"data_offsets", {t.begin, t.end}}};
  std::string s = j.dump();
  s.append((8 - s.size() % 8) % 8, ' ');
  return s;
}

}  // namespace peft
