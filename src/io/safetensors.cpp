#include "peft/safetensors.h"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>

#include "util/atomic_file.h"

namespace peft {

// The mapping, and how many live tensors alias each tensor's byte range. When the last
// tensor over a range dies, the whole pages inside it are handed back (MADV_DONTNEED):
// nothing can read them any more, and a model whose weights were converted (fp32 to bf16
// for training, dequantized, cast) would otherwise keep the file's pages resident beside
// the converted copy until every last tensor of the file is gone. Ranges never overlap
// (the header check), and pages shared with a neighbouring tensor are left alone.
struct SafetensorsFile::Mapping {
  void* addr = nullptr;
  size_t size = 0;
  std::mutex mu;
  std::map<const uint8_t*, int64_t> live;  // range start -> tensors aliasing it

  void acquire(const uint8_t* begin) {
    std::lock_guard<std::mutex> lock(mu);
    ++live[begin];
  }
  void release(const uint8_t* begin, size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mu);
      auto it = live.find(begin);
      if (it == live.end() || --it->second > 0) return;
      live.erase(it);
    }
    static const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
    const uintptr_t lo = (reinterpret_cast<uintptr_t>(begin) + page - 1) / page * page;
    const uintptr_t hi = (reinterpret_cast<uintptr_t>(begin) + bytes) / page * page;
    if (hi > lo) madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);
  }
  ~Mapping() {
    if (addr && addr != MAP_FAILED) munmap(addr, size);
  }
};

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path), map_(std::make_shared<Mapping>()) {
  // O_NONBLOCK: opening a FIFO or a device must not wait for a writer.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) throw SafetensorsError(path + ": cannot open: " + std::strerror(errno));
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    ::close(fd);
    throw SafetensorsError(path + ": cannot stat: " + std::strerror(errno));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw SafetensorsError(path + ": not a regular file");
  }
  map_->size = static_cast<size_t>(st.st_size);
  static const uint8_t kEmpty[1] = {0};
  const uint8_t* bytes = kEmpty;
  if (map_->size > 0) {
    // Copy-on-write: a caller that writes into a tensor (merging an adapter into a
    // weight) changes its private pages, never the file.
    map_->addr = mmap(nullptr, map_->size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (map_->addr == MAP_FAILED) {
      ::close(fd);
      throw SafetensorsError(path + ": mmap failed: " + std::strerror(errno));
    }
    bytes = static_cast<const uint8_t*>(map_->addr);
  }
  ::close(fd);
  header_ = parse_safetensors_header(bytes, map_->size, path);
  for (size_t i = 0; i < header_.tensors.size(); ++i) index_[header_.tensors[i].name] = i;
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  for (const auto& [n, _] : index_) out.push_back(n);
  return out;
}

bool SafetensorsFile::contains(const std::string& name) const { return index_.count(name) > 0; }

const StTensorInfo& SafetensorsFile::info(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) throw SafetensorsError(path_ + ": no tensor named '" + name + "'");
  return header_.tensors[it->second];
}

at::Tensor SafetensorsFile::get(const std::string& name) const {
  const StTensorInfo& t = info(name);
  const auto st = to_scalar_type(t.dtype, path_);
  auto opts = at::TensorOptions().dtype(st);
  if (t.end == t.begin) return at::empty(t.shape, opts);
  auto* data = static_cast<uint8_t*>(map_->addr) + header_.data_start + t.begin;
  const size_t es = dtype_size(t.dtype);
  if (reinterpret_cast<uintptr_t>(data) % es != 0)  // unaligned (legal in the format): copy
    return at::from_blob(data, t.shape, opts).clone();
  auto keep = map_;
  const size_t bytes = t.end - t.begin;
  keep->acquire(data);
  return at::from_blob(data, t.shape, [keep, data, bytes](void*) mutable {
    keep->release(data, bytes);
    keep.reset();
  }, opts);
}

at::ScalarType to_scalar_type(StDType t, const std::string& where) {
  switch (t) {
    case StDType::BOOL: return at::kBool;
    case StDType::U8: return at::kByte;
    case StDType::I8: return at::kChar;
    case StDType::I16: return at::kShort;
    case StDType::I32: return at::kInt;
    case StDType::I64: return at::kLong;
    case StDType::U16: return at::kUInt16;
    case StDType::U32: return at::kUInt32;
    case StDType::U64: return at::kUInt64;
    case StDType::F16: return at::kHalf;
    case StDType::BF16: return at::kBFloat16;
    case StDType::F32: return at::kFloat;
    case StDType::F64: return at::kDouble;
  }
  throw SafetensorsError(where + ": unsupported dtype");
}

StDType to_st_dtype(at::ScalarType t) {
  switch (t) {
    case at::kBool: return StDType::BOOL;
    case at::kByte: return StDType::U8;
    case at::kChar: return StDType::I8;
    case at::kShort: return StDType::I16;
    case at::kInt: return StDType::I32;
    case at::kLong: return StDType::I64;
    case at::kUInt16: return StDType::U16;
    case at::kUInt32: return StDType::U32;
    case at::kUInt64: return StDType::U64;
    case at::kHalf: return StDType::F16;
    case at::kBFloat16: return StDType::BF16;
    case at::kFloat: return StDType::F32;
    case at::kDouble: return StDType::F64;
    default: throw SafetensorsError(std::string("no safetensors dtype for ") + c10::toString(t));
  }
}

namespace {

// A safetensors file's bytes in order: the 8-byte little-endian header length and the
// JSON header (`prefix`), then each tensor's data. Saving to disk and sending over the
// wire both use this one layout.
struct SafetensorsLayout {
  std::string prefix;
  std::vector<at::Tensor> data;  // contiguous CPU tensors, in offset order
  uint64_t data_bytes = 0;
};

SafetensorsLayout layout_safetensors(const NamedTensors& tensors, const std::map<std::string, std::string>& metadata,
                                     const std::string& where) {
  SafetensorsLayout out;
  std::vector<StTensorInfo> infos;
  for (const auto& [name, t] : tensors) {
    if (name == "__metadata__") throw SafetensorsError(where + ": '__metadata__' is not a tensor name");
    at::Tensor c = t.detach().to(at::kCPU).contiguous();
    StTensorInfo info;
    info.name = name;
    info.dtype = to_st_dtype(c.scalar_type());
    info.shape = c.sizes().vec();
    info.begin = out.data_bytes;
    info.end = out.data_bytes + c.nbytes();
    out.data_bytes = info.end;
    infos.push_back(info);
    out.data.push_back(c);
  }
  const std::string header = serialize_safetensors_header(infos, metadata);
  out.prefix.resize(8);
  for (int i = 0; i < 8; ++i) out.prefix[i] = static_cast<char>(uint64_t(header.size()) >> (8 * i));
  out.prefix += header;
  return out;
}

}  // namespace

void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata) {
  const SafetensorsLayout layout = layout_safetensors(tensors, metadata, path);
  AtomicFile out(path);
  out.write(layout.prefix);
  for (const auto& c : layout.data) out.write(c.data_ptr(), c.nbytes());
  out.commit();
}

std::string serialize_safetensors(const NamedTensors& tensors, const std::map<std::string, std::string>& metadata) {
  const SafetensorsLayout layout = layout_safetensors(tensors, metadata, "safetensors");
  std::string out;
  out.reserve(layout.prefix.size() + layout.data_bytes);
  out += layout.prefix;
  for (const auto& c : layout.data) out.append(static_cast<const char*>(c.data_ptr()), c.nbytes());
  return out;
}

}  // namespace peft
