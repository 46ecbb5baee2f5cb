// Parsing and validating a GGUF file image, and GgufFile (mmap).
//
// The file is untrusted: every count and length is checked against the bytes left
// before any allocation, so a hostile count cannot make us reserve more memory than a
// small multiple of the file's size.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <numeric>
#include <unordered_set>

#include "io/gguf_internal.h"
#include "peft/gguf.h"

namespace peft {
namespace {

constexpr uint64_t kDefaultAlignment = 32;
constexpr int kMaxDims = 4;
constexpr int kMaxArrayDepth = 8;  // arrays in arrays; gguf-py reads any depth, ggml none
constexpr uint64_t kMinKvBytes = 8 + 4 + 1;            // key length, type, a 1-byte value
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 8 + 4 + 8;  // name length, n_dims, 1 dim, type, offset

int value_width(uint32_t type) { return gguf_type_width(static_cast<GgufType>(type)); }

bool valid_type(uint32_t type) { return type <= static_cast<uint32_t>(GgufType::F64); }

// Reads little-endian fields from the file image, failing with the file name, the
// offset and what was being read when the bytes run out. `what` names the field, with
// "[index]" appended when index >= 0; messages are only formatted on failure, since a
// vocabulary is read string by string.
class Cursor {
 public:
  Cursor(const uint8_t* p, size_t size, const std::string& where) : p_(p), size_(size), where_(where) {}

  uint64_t pos() const { return pos_; }
  uint64_t left() const { return size_ - pos_; }

  [[noreturn]] void fail(const std::string& what) const { throw GgufError(where_ + ": " + what); }

  void need(uint64_t n, const std::string& what, int64_t index = -1) const {
    if (n > left()) truncated(n, what, index, "");
  }

  uint64_t uint(int width, const std::string& what, int64_t index = -1) {
    need(static_cast<uint64_t>(width), what, index);
    uint64_t v = 0;
    for (int i = width - 1; i >= 0; --i) v = (v << 8) | p_[pos_ + i];
    pos_ += static_cast<uint64_t>(width);
    return v;
  }
  uint32_t u32(const std::string& what) { return static_cast<uint32_t>(uint(4, what)); }
  uint64_t u64(const std::string& what) { return uint(8, what); }

  std::string str(const std::string& what, int64_t index = -1) {
    const uint64_t n = uint(8, what, index);
    if (n > left()) truncated(n, what, index, " (" + std::to_string(n) + "-byte string)");
    std::string s(reinterpret_cast<const char*>(p_ + pos_), n);
    pos_ += n;
    return s;
  }

 private:
  [[noreturn]] void truncated(uint64_t n, const std::string& what, int64_t index, const std::string& detail) const {
    const std::string at = index >= 0 ? "[" + std::to_string(index) + "]" : "";
    fail("truncated at byte " + std::to_string(pos_) + " reading " + what + at + detail + " (needs " +
         std::to_string(n) + " bytes, " + std::to_string(left()) + " left)");
  }

  const uint8_t* p_;
  uint64_t size_;
  uint64_t pos_ = 0;
  const std::string& where_;
};

GgufValue read_value(Cursor& c, uint32_t type, int depth, const std::string& ctx);

GgufValue read_array(Cursor& c, int depth, const std::string& ctx) {
  const uint32_t elem = c.u32(ctx + ": array element type");
  const uint64_t count = c.u64(ctx + ": array length");
  if (!valid_type(elem)) c.fail(ctx + ": unknown array element type " + std::to_string(elem));
  if (depth >= kMaxArrayDepth) c.fail(ctx + ": arrays nested more than " + std::to_string(kMaxArrayDepth) + " deep");
  const GgufType et = static_cast<GgufType>(elem);
  const uint64_t min_bytes = et == GgufType::STRING ? 8 : et == GgufType::ARRAY ? 12 : value_width(elem);
  if (count > c.left() / min_bytes)
    c.fail(ctx + ": array of " + std::to_string(count) + " " + gguf_type_name(et) + " cannot fit in the " +
           std::to_string(c.left()) + " bytes left");
  if (et == GgufType::STRING) {
    std::vector<std::string> v;
    v.reserve(count);
    for (uint64_t i = 0; i < count; ++i) v.push_back(c.str(ctx, static_cast<int64_t>(i)));
    return GgufValue::string_array(std::move(v));
  }
  if (et == GgufType::ARRAY) {
    std::vector<GgufValue> v;
    v.reserve(count);
    for (uint64_t i = 0; i < count; ++i) v.push_back(read_array(c, depth + 1, ctx + "[" + std::to_string(i) + "]"));
    return GgufValue::array_of_arrays(std::move(v));
  }
  const int w = value_width(elem);
  c.need(count * w, ctx + ": array data");
  std::vector<uint64_t> bits(count);
  for (uint64_t i = 0; i < count; ++i) bits[i] = c.uint(w, ctx, static_cast<int64_t>(i));
  return GgufValue::number_array(et, std::move(bits));
}

GgufValue read_value(Cursor& c, uint32_t type, int depth, const std::string& ctx) {
  if (!valid_type(type)) c.fail(ctx + ": unknown value type " + std::to_string(type));
  const GgufType t = static_cast<GgufType>(type);
  if (t == GgufType::STRING) return GgufValue::string(c.str(ctx));
  if (t == GgufType::ARRAY) return read_array(c, depth, ctx);
  return GgufValue::number(t, c.uint(value_width(type), ctx));
}

void read_version(Cursor& c, GgufHeader& h) {
  h.version = c.u32("the version");
  if (h.version == 1) c.fail("GGUF v1 is not supported (this reader handles v2 and v3)");
  if (h.version != 0 && (h.version & 0xffff) == 0)
    c.fail("big-endian GGUF files are not supported (version field reads " + std::to_string(h.version) + ")");
  if (h.version != 2 && h.version != 3)
    c.fail("unsupported GGUF version " + std::to_string(h.version) + " (this reader handles v2 and v3)");
}

void read_metadata(Cursor& c, uint64_t n_kv, GgufHeader& h) {
  if (n_kv > c.left() / kMinKvBytes)
    c.fail("metadata count " + std::to_string(n_kv) + " cannot fit in the " + std::to_string(c.left()) + " bytes left");
  for (uint64_t i = 0; i < n_kv; ++i) {
    const std::string n = "metadata entry #" + std::to_string(i);
    std::string key = c.str(n + " key");
    if (!gguf_valid_utf8(key)) c.fail(n + ": key is not valid UTF-8");
    const std::string ctx = "metadata key '" + key + "'";
    const uint32_t type = c.u32(ctx + ": value type");
    h.metadata.add(std::move(key), read_value(c, type, 0, ctx));
  }
  if (const GgufValue* a = h.metadata.find("general.alignment")) {
    if (a->type() != GgufType::U32)
      c.fail(std::string("metadata key 'general.alignment': expected UINT32, found ") + gguf_type_name(a->type()));
    h.alignment = a->bits();
    if (h.alignment == 0 || (h.alignment & (h.alignment - 1)) != 0)
      c.fail("metadata key 'general.alignment': " + std::to_string(h.alignment) + " is not a power of two");
  }
}

GgufTensorInfo read_tensor_info(Cursor& c, uint64_t i) {
  GgufTensorInfo t;
  t.name = c.str("tensor info #" + std::to_string(i) + " name");
  if (!gguf_valid_utf8(t.name)) c.fail("tensor info #" + std::to_string(i) + ": name is not valid UTF-8");
  const std::string ctx = "tensor '" + t.name + "'";
  const uint32_t n_dims = c.u32(ctx + ": n_dims");
  if (n_dims < 1 || n_dims > kMaxDims)
    c.fail(ctx + ": " + std::to_string(n_dims) + " dimensions (must be 1 to " + std::to_string(kMaxDims) + ")");
  t.n_elements = 1;
  for (uint32_t d = 0; d < n_dims; ++d) {
    const uint64_t v = c.u64(ctx + ": dims");
    // Zero is rejected too: ggml divides by dims 1..3 while checking them.
    if (v == 0 || v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      c.fail(ctx + ": dimension " + std::to_string(d) + " is " + std::to_string(v) + " (must be 1 to 2^63-1)");
    if (static_cast<uint64_t>(t.n_elements) > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / v)
      c.fail(ctx + ": element count overflows");
    t.n_elements *= static_cast<int64_t>(v);
    t.dims.push_back(static_cast<int64_t>(v));
  }
  const uint32_t type = c.u32(ctx + ": type");
  if (!ggml_type_known(type)) c.fail(ctx + ": unknown ggml type " + std::to_string(type));
  t.type = static_cast<GgmlType>(type);
  t.offset = c.u64(ctx + ": offset");
  const int64_t bs = type_block_size(t.type);
  if (t.dims[0] % bs != 0)
    c.fail(ctx + ": row length " + std::to_string(t.dims[0]) + " is not a multiple of the " + ggml_type_name(t.type) +
           " block size " + std::to_string(bs));
  const uint64_t blocks = static_cast<uint64_t>(t.n_elements / bs);
  const uint64_t bb = static_cast<uint64_t>(type_block_bytes(t.type));
  if (blocks > std::numeric_limits<uint64_t>::max() / bb) c.fail(ctx + ": byte size overflows");
  t.n_bytes = blocks * bb;
  return t;
}

// Each tensor's bytes lie inside the data section, at an aligned offset, apart from
// the others.
void check_placement(const Cursor& c, const GgufHeader& h, uint64_t size) {
  if (h.tensors.empty()) return;
  if (h.data_start > size)
    c.fail("the data section would start at byte " + std::to_string(h.data_start) + ", past the end of the " +
           std::to_string(size) + "-byte file");
  const uint64_t data_size = size - h.data_start;
  for (const auto& t : h.tensors) {
    const std::string ctx = "tensor '" + t.name + "'";
    if (t.offset % h.alignment != 0)
      c.fail(ctx + ": offset " + std::to_string(t.offset) + " is not a multiple of the alignment " +
             std::to_string(h.alignment));
    if (t.offset > data_size || t.n_bytes > data_size - t.offset)
      c.fail(ctx + ": bytes [" + std::to_string(t.offset) + ", +" + std::to_string(t.n_bytes) + ") lie outside the " +
             std::to_string(data_size) + "-byte data section; the file is truncated or corrupt");
  }
  std::vector<size_t> order(h.tensors.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return h.tensors[a].offset < h.tensors[b].offset; });
  for (size_t i = 1; i < order.size(); ++i) {
    const GgufTensorInfo& prev = h.tensors[order[i - 1]];
    const GgufTensorInfo& cur = h.tensors[order[i]];
    if (cur.offset < prev.offset + prev.n_bytes)
      c.fail("tensors '" + prev.name + "' and '" + cur.name + "' overlap in the data section");
  }
}

}  // namespace

// Strict UTF-8 (no overlong forms, surrogates or code points past U+10FFFF).
bool gguf_valid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const auto* end = p + s.size();
  while (p < end) {
    const unsigned c = *p;
    int n;
    uint32_t cp, min;
    if (c < 0x80) { ++p; continue; }
    if ((c & 0xe0) == 0xc0) { n = 1; cp = c & 0x1f; min = 0x80; }
    else if ((c & 0xf0) == 0xe0) { n = 2; cp = c & 0x0f; min = 0x800; }
    else if ((c & 0xf8) == 0xf0) { n = 3; cp = c & 0x07; min = 0x10000; }
    else return false;
    if (end - p <= n) return false;
    for (int i = 1; i <= n; ++i) {
      if ((p[i] & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (p[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    p += n + 1;
  }
  return true;
}

GgufHeader parse_gguf(const uint8_t* bytes, size_t size, const std::string& where) {
  Cursor c(bytes, size, where);
  if (size < 4 || std::memcmp(bytes, "GGUF", 4) != 0)
    c.fail(size < 4 ? "file is " + std::to_string(size) + " bytes, too short to be GGUF"
                    : "not a GGUF file (no \"GGUF\" magic at the start)");
  c.uint(4, "the magic");
  GgufHeader h;
  h.metadata = GgufMetadata(where);
  h.alignment = kDefaultAlignment;
  read_version(c, h);
  const uint64_t n_tensors = c.u64("the tensor count");
  const uint64_t n_kv = c.u64("the metadata count");
  read_metadata(c, n_kv, h);

  if (n_tensors > c.left() / kMinTensorInfoBytes)
    c.fail("tensor count " + std::to_string(n_tensors) + " cannot fit in the " + std::to_string(c.left()) +
           " bytes left");
  std::unordered_set<std::string> names;
  h.tensors.reserve(n_tensors);
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensorInfo t = read_tensor_info(c, i);
    if (!names.insert(t.name).second) c.fail("tensor '" + t.name + "' appears twice");
    h.tensors.push_back(std::move(t));
  }
  // pos <= size, and alignment <= 2^31, so this cannot overflow.
  h.data_start = (c.pos() + h.alignment - 1) / h.alignment * h.alignment;
  check_placement(c, h, size);
  return h;
}

// ---------------------------------------------------------------- GgufFile

GgufFile::GgufFile(const std::string& path) : path_(path) {
  // O_NONBLOCK: opening a FIFO or a device must not wait for a writer.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) throw GgufError(path + ": cannot open: " + std::strerror(errno));
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    throw GgufError(path + ": cannot stat: " + std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw GgufError(path + ": not a regular file");
  }
  size_ = static_cast<size_t>(st.st_size);
  static const uint8_t kEmpty[1] = {0};
  bytes_ = kEmpty;
  if (size_ > 0) {
    void* addr = mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (addr == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      throw GgufError(path + ": mmap failed: " + std::strerror(err));
    }
    bytes_ = static_cast<const uint8_t*>(addr);
  }
  ::close(fd);
  try {
    header_ = parse_gguf(bytes_, size_, path);
  } catch (...) {
    if (size_ > 0) munmap(const_cast<uint8_t*>(bytes_), size_);
    throw;
  }
  for (size_t i = 0; i < header_.tensors.size(); ++i) index_.emplace(header_.tensors[i].name, i);
}

GgufFile::~GgufFile() {
  if (size_ > 0) munmap(const_cast<uint8_t*>(bytes_), size_);
}

const GgufTensorInfo& GgufFile::info(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) throw GgufError(path_ + ": no tensor named '" + name + "'");
  return header_.tensors[it->second];
}

std::span<const uint8_t> GgufFile::data(const GgufTensorInfo& t) const {
  return {bytes_ + header_.data_start + t.offset, static_cast<size_t>(t.n_bytes)};
}

std::vector<float> GgufFile::dequantize(const std::string& name) const {
  const GgufTensorInfo& t = info(name);
  if (!can_dequantize(t.type))
    throw GgufError(path_ + ": tensor '" + name + "' is " + ggml_type_name(t.type) + ", which cannot be dequantized");
  std::vector<float> out(static_cast<size_t>(t.n_elements));
  peft::dequantize(t.type, data(t).data(), t.n_elements, out.data());
  return out;
}

}  // namespace peft
